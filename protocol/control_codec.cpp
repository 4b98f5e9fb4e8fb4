// Control-channel codecs (docs/protocol.md §1): binary frames and lines in,
// InboundMessage out; JSON model in, framed bytes out.
#include "protocol/control_codec.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <utility>

#include "protocol/base64.hpp"
#include "protocol/etf.hpp"

namespace tlsport::protocol {
namespace {

using json = nlohmann::json;

/// Error category of ControlError.
class ControlCategory final : public std::error_category {
 public:
  /// The category's name, for logs.
  const char* name() const noexcept override { return "tlsport.control"; }
  /// A sentence for people, per ControlError.
  std::string message(int value) const override {
    switch (static_cast<ControlError>(value)) {
      case ControlError::frame_too_large:
        return "control frame or line larger than the message cap";
      case ControlError::empty_frame:
        return "control frame with an empty body";
      case ControlError::bad_frame_type:
        return "control frame type is neither CONTROL (0x00) nor DATA (0x01)";
      case ControlError::short_data_frame:
        return "DATA frame shorter than its 4-byte socket id";
      case ControlError::bad_term:
        return "malformed Erlang external term";
      case ControlError::bad_json:
        return "malformed JSON";
      case ControlError::not_an_object:
        return "control message is not a map/object";
      case ControlError::not_an_octet_string:
        return "control message is not a BER OCTET STRING";
    }
    return "unknown control channel error";
  }
};

/// JSON insignificant whitespace (RFC 8259).
bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// True when JSON text nests arrays/objects deeper than the term cap, or has
/// more values than etf::kMaxTerms; a cheap scan before parsing, so that a
/// hostile line can build neither a deep tree nor a huge one from small text.
bool json_too_deep(std::string_view text) {
  int depth = 0;
  std::size_t values = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        if (++depth > etf::kMaxDepth) return true;
        if (++values > etf::kMaxTerms) return true;
        break;
      case ',':
      case ':':
        if (++values > etf::kMaxTerms) return true;
        break;
      case '}':
      case ']':
        --depth;
        break;
      default:
        break;
    }
  }
  return false;
}

/// Replaces every binary value by its base64 string (JSON has no bytes).
void binaries_to_base64(json& value) {
  if (value.is_binary()) {
    std::string text;
    const auto& bytes = value.get_binary();
    base64::encode(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                   text);
    value = std::move(text);
  } else if (value.is_structured()) {
    for (auto& item : value) binaries_to_base64(item);
  }
}

/// True when a binary value occurs anywhere in `value`.
bool has_binary(const json& value) {
  if (value.is_binary()) return true;
  if (value.is_structured()) {
    for (const auto& item : value) {
      if (has_binary(item)) return true;
    }
  }
  return false;
}

/// Turns ETF binaries into strings, since the model's string is a binary in ETF.
void binaries_to_strings(json& value) {
  if (value.is_binary()) {
    const auto& bytes = value.get_binary();
    value = std::string(bytes.begin(), bytes.end());
  } else if (value.is_structured()) {
    for (auto& item : value) binaries_to_strings(item);
  }
}

/// binaries_to_strings() for a decoded ETF command, except its top-level
/// "data", which carries bytes.
void command_binaries_to_strings(json& command) {
  for (auto& [key, item] : command.get_ref<json::object_t&>()) {
    if (key != "data") binaries_to_strings(item);
  }
}

/// A json binary holding the bytes of `s`.
json bytes_of(const std::string& s) {
  return json::binary(json::binary_t::container_type(s.begin(), s.end()));
}

/// In ETF "" is [] (NIL_EXT, read as an empty array): an empty byte string there.
void etf_empty_list_to_string(json& value) {
  if (value.is_array() && value.empty()) value = std::string();
}

/// Brings "data" and "text" to the one form commands see: "data" as a json
/// binary. In JSON a "data" string is base64; in ETF it is a list of bytes.
/// A JSON "data" that is not base64 stays a string, which the command then
/// refuses (its error reply names the ref and the socket).
void normalize_data(json& object, TermFormat format) {
  auto data = object.find("data");
  if (data != object.end() && format == TermFormat::etf) etf_empty_list_to_string(*data);
  if (data != object.end() && data->is_string()) {
    if (format == TermFormat::etf) {
      *data = bytes_of(data->get_ref<const std::string&>());
    } else {
      std::string bytes;
      if (base64::decode(data->get_ref<const std::string&>(), bytes)) *data = bytes_of(bytes);
    }
  }
  if (data == object.end()) {
    const auto text = object.find("text");
    if (text != object.end() && format == TermFormat::etf) etf_empty_list_to_string(*text);
    if (text != object.end() && text->is_string()) {
      json bytes = bytes_of(text->get_ref<const std::string&>());
      object.erase(text);
      object["data"] = std::move(bytes);
    }
  }
}

/// Parses JSON text that must be an object, then normalize_data().
ControlError parse_json_object(std::string_view text, json& out, std::string& detail) {
  if (json_too_deep(text)) {
    detail = "JSON nested deeper than " + std::to_string(etf::kMaxDepth) + " or with more than " +
             std::to_string(etf::kMaxTerms) + " values";
    return ControlError::bad_json;
  }
  try {
    out = json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {  // json::parse_error, or bad_alloc
    detail = e.what();
    return ControlError::bad_json;
  }
  if (!out.is_object()) {
    detail = std::string("the message is not a JSON object (") + out.type_name() + ")";
    return ControlError::not_an_object;
  }
  normalize_data(out, TermFormat::json);
  return ControlError{};
}

/// Reads a BER length at tlv[pos]: false when malformed; `indefinite` for 0x80.
bool ber_length(std::string_view tlv, std::size_t& pos, std::size_t& length, bool& indefinite) {
  if (pos >= tlv.size()) return false;
  const auto first = static_cast<std::uint8_t>(tlv[pos++]);
  indefinite = first == 0x80;
  if (first < 0x80 || indefinite) {
    length = indefinite ? 0 : first;
    return true;
  }
  const unsigned bytes = first & 0x7F;
  if (bytes > 8 || pos + bytes > tlv.size()) return false;
  length = 0;
  for (unsigned i = 0; i < bytes; ++i)
    length = (length << 8) | static_cast<std::uint8_t>(tlv[pos++]);
  return length <= tlv.size() - pos;
}

/// The contents of a BER OCTET STRING (X.690 8.7): primitive (04), or
/// constructed (24) of primitive segments, definite or indefinite; `body`
/// becomes a view of them (joined in `joined` for segments).
bool octet_string_contents(std::string_view& body, std::string& joined, std::string& detail) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto tag = body.empty() ? 0 : static_cast<std::uint8_t>(body[0]);
  std::size_t pos = 1, length = 0;
  bool indefinite = false;
  if ((tag != 0x04 && tag != 0x24) || !ber_length(body, pos, length, indefinite)) {
    detail = std::string("tag 0x") + kHex[tag >> 4] + kHex[tag & 15] +
             " (a message is an OCTET STRING: 04, or 24 of 04 segments)";
    return false;
  }
  if (tag == 0x04) {
    body = body.substr(pos, length);
    return true;
  }
  const std::size_t end = indefinite ? body.size() : pos + length;
  while (pos < end) {
    if (indefinite && body.substr(pos, 2) == std::string_view("\0\0", 2)) break;
    std::size_t part = 0;
    bool inner_indefinite = false;
    if (static_cast<std::uint8_t>(body[pos]) != 0x04 ||
        !ber_length(body, ++pos, part, inner_indefinite)) {
      detail = "a segment of a constructed OCTET STRING is not a primitive OCTET STRING";
      return false;
    }
    joined.append(body.substr(pos, part));
    pos += part;
  }
  body = joined;
  return true;
}

/// Appends a BER definite length.
void put_ber_length(std::string& out, std::size_t length) {
  if (length < 0x80) {
    out.push_back(static_cast<char>(length));
    return;
  }
  unsigned bytes = 0;
  for (std::size_t n = length; n != 0; n >>= 8) ++bytes;
  out.push_back(static_cast<char>(0x80 | bytes));
  for (unsigned i = bytes; i-- > 0;) out.push_back(static_cast<char>((length >> (8 * i)) & 0xFF));
}

/// Reads a big-endian unsigned of 4 bytes.
std::uint32_t get_be32(const char* p) {
  return (std::uint32_t{static_cast<std::uint8_t>(p[0])} << 24) |
         (std::uint32_t{static_cast<std::uint8_t>(p[1])} << 16) |
         (std::uint32_t{static_cast<std::uint8_t>(p[2])} << 8) |
         std::uint32_t{static_cast<std::uint8_t>(p[3])};
}

/// Makes room for `extra` more bytes, growing geometrically so that many
/// appends to one buffer stay linear whatever the library's reserve() does.
void reserve_more(std::string& out, std::size_t extra) {
  const std::size_t need = out.size() + extra;
  if (need > out.capacity()) out.reserve(std::max(need, 2 * out.capacity()));
}

/// Appends the JSON text of a message: binaries as base64, never throwing on
/// invalid UTF-8 (replaced by U+FFFD).
void append_json(const json& message, std::string& out) {
  constexpr auto kReplace = json::error_handler_t::replace;
  if (!has_binary(message)) {
    out += message.dump(-1, ' ', false, kReplace);
    return;
  }
  json copy = message;
  binaries_to_base64(copy);
  out += copy.dump(-1, ' ', false, kReplace);
}

}  // namespace

const std::error_category& control_category() {
  static const ControlCategory category;
  return category;
}

std::error_code make_error_code(ControlError e) {
  return {static_cast<int>(e), control_category()};
}

bool is_fatal(ControlError e) { return e == ControlError::frame_too_large; }

// ---------------------------------------------------------------------------
// ControlDecoder

ControlDecoder::ControlDecoder(ControlEncoding encoding, unsigned header_bytes,
                               std::size_t max_message)
    : encoding_(encoding),
      deframer_(encoding == ControlEncoding::binary
                    ? Framing{FramingKind::packet, header_bytes, false}
                : encoding == ControlEncoding::asn1 ? Framing{FramingKind::asn1, 0, false}
                                                    : Framing{FramingKind::line, 0, false},
                max_message) {}

ControlError ControlDecoder::parse_term(std::string_view term, nlohmann::json& out,
                                        std::string& detail) {
  if (term.empty()) {
    detail = "CONTROL frame without a term";
    return ControlError::bad_term;
  }
  if (static_cast<std::uint8_t>(term[0]) == 131) {
    if (!first_format_) first_format_ = TermFormat::etf;
    if (!etf::decode(term, out, detail)) return ControlError::bad_term;
    if (!out.is_object()) {
      detail = std::string("the term is not a map (") + out.type_name() + ")";
      return ControlError::not_an_object;
    }
    command_binaries_to_strings(out);
    normalize_data(out, TermFormat::etf);
    return ControlError{};
  }
  // Anything else is read as JSON; only a term that looks like a JSON object
  // fixes the reply format, so garbage does not choose it.
  std::size_t i = 0;
  while (i < term.size() && is_json_space(term[i])) ++i;
  if (!first_format_ && i < term.size() && term[i] == '{') first_format_ = TermFormat::json;
  return parse_json_object(term, out, detail);
}

ControlDecoder::Decoded ControlDecoder::decode(std::string_view body, InboundMessage& message,
                                               ControlError& error, std::string& detail) {
  if (encoding_ == ControlEncoding::lines) {
    if (!body.empty() && body.back() == '\n') body.remove_suffix(1);
    if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
    std::size_t i = 0;
    while (i < body.size() && is_json_space(body[i])) ++i;
    if (i == body.size()) return Decoded::skip;  // blank lines are ignored
    error = parse_json_object(body, message.command, detail);
    return error == ControlError{} ? Decoded::message : Decoded::bad;
  }

  // A constructed OCTET STRING's segments are joined in joined_, which the
  // message's data may point into: it lives until the next frame.
  joined_.clear();
  if (encoding_ == ControlEncoding::asn1 && !octet_string_contents(body, joined_, detail)) {
    error = ControlError::not_an_octet_string;
    return Decoded::bad;
  }
  if (body.empty()) {
    error = ControlError::empty_frame;
    detail = "frame of length 0";
    return Decoded::bad;
  }
  const auto type = static_cast<std::uint8_t>(body[0]);
  if (type == kFrameData) {
    if (body.size() < 5) {
      error = ControlError::short_data_frame;
      detail = "DATA frame body of " + std::to_string(body.size()) + " bytes";
      return Decoded::bad;
    }
    message.kind = InboundMessage::Kind::data;
    message.socket_id = get_be32(body.data() + 1);
    message.data = body.substr(5);
    return Decoded::message;
  }
  if (type != kFrameControl) {
    static constexpr char kHex[] = "0123456789abcdef";
    error = ControlError::bad_frame_type;
    detail = std::string("frame type 0x") + kHex[type >> 4] + kHex[type & 15];
    return Decoded::bad;
  }
  error = parse_term(body.substr(1), message.command, detail);
  return error == ControlError{} ? Decoded::message : Decoded::bad;
}

// ---------------------------------------------------------------------------
// ControlEncoder

ControlEncoder::ControlEncoder(ControlEncoding encoding, unsigned header_bytes, TermFormat format)
    : encoding_(encoding), header_bytes_(header_bytes), format_(format) {}

std::size_t ControlEncoder::max_body() const {
  if (header_bytes_ >= sizeof(std::size_t) || header_bytes_ >= 8) {
    return std::numeric_limits<std::size_t>::max();
  }
  return (std::size_t{1} << (8 * header_bytes_)) - 1;
}

void ControlEncoder::put_header(std::string& out, std::size_t at, std::size_t body) const {
  for (unsigned i = 0; i < header_bytes_; ++i) {
    const unsigned shift = 8 * (header_bytes_ - 1 - i);
    out[at + i] = shift < 64 ? static_cast<char>((std::uint64_t{body} >> shift) & 0xFF) : 0;
  }
}

bool ControlEncoder::append_message(std::string& out, const nlohmann::json& message) const {
  const std::size_t start = out.size();
  try {
    if (encoding_ == ControlEncoding::lines) {
      append_json(message, out);
      out.push_back('\n');
      return true;
    }
    if (encoding_ == ControlEncoding::asn1) {
      std::string body(1, static_cast<char>(kFrameControl));
      if (format_ == TermFormat::etf)
        etf::encode(message, body);
      else
        append_json(message, body);
      out.push_back('\x04');
      put_ber_length(out, body.size());
      out.append(body);
      return true;
    }
    out.append(header_bytes_, '\0');
    out.push_back(static_cast<char>(kFrameControl));
    if (format_ == TermFormat::etf) {
      etf::encode(message, out);
    } else {
      append_json(message, out);
    }
    const std::size_t body = out.size() - start - header_bytes_;
    if (body > max_body()) {
      out.resize(start);
      return false;
    }
    put_header(out, start, body);
    return true;
  } catch (const std::exception&) {  // only bad_alloc: append nothing
    out.resize(start);
    return false;
  }
}

bool ControlEncoder::append_data(std::string& out, std::uint32_t socket_id,
                                 std::string_view data) const {
  if (data.size() > max_data_per_frame()) return false;
  if (encoding_ == ControlEncoding::lines) {
    static constexpr std::string_view kHead = "{\"event\":\"fromsocket\",\"id\":";
    static constexpr std::string_view kMid = ",\"data\":\"";
    static constexpr std::string_view kTail = "\"}\n";
    char id[10];
    const auto id_end = std::to_chars(id, id + sizeof id, socket_id).ptr;
    const std::size_t id_len = static_cast<std::size_t>(id_end - id);
    const std::size_t start = out.size();
    try {
      reserve_more(out, kHead.size() + id_len + kMid.size() + base64::encoded_size(data.size()) +
                            kTail.size());
      out.append(kHead);
      out.append(id, id_len);
      out.append(kMid);
      base64::encode(data, out);
      out.append(kTail);
      return true;
    } catch (const std::exception&) {  // only bad_alloc: append nothing
      out.resize(start);
      return false;
    }
  }
  const std::size_t start = out.size();
  try {
    if (encoding_ == ControlEncoding::asn1) {
      reserve_more(out, 10 + 5 + data.size());
      out.push_back('\x04');
      put_ber_length(out, 5 + data.size());
    } else {
      reserve_more(out, header_bytes_ + 5 + data.size());
      out.append(header_bytes_, '\0');
      put_header(out, start, 5 + data.size());
    }
    out.push_back(static_cast<char>(kFrameData));
    for (int shift = 24; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((socket_id >> shift) & 0xFF));
    }
    out.append(data);
    return true;
  } catch (const std::exception&) {  // only bad_alloc: append nothing
    out.resize(start);
    return false;
  }
}

std::size_t ControlEncoder::max_data_per_frame() const {
  if (encoding_ != ControlEncoding::binary) return std::numeric_limits<std::size_t>::max();
  const std::size_t body = max_body();
  return body < 5 ? 0 : body - 5;
}

}  // namespace tlsport::protocol
