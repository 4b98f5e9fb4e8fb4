// Fuzz target: the control channel's ControlDecoder, binary ({packet,N} with
// N = 1, 2, 4; CONTROL frames with ETF or JSON terms, DATA frames), lines, and
// asn1 (each frame body in a BER OCTET STRING).
//
// Input: byte 0 picks the encoding and whether the consumer stops after each
// message, byte 1 the message cap, bytes 2-3 where the rest is split in two;
// the rest is the byte stream from a client.
//
// Checked: fed whole or split, with or without stops, the same messages, bad
// reports and fatal error come out; each whole frame or non-blank line gives
// exactly one message or one bad report, of a kind its first bytes allow; a
// fatal error exactly when a header or line is over the cap; a DATA frame's
// id and bytes are those of the frame; and every command, encoded again by
// ControlEncoder (JSON, ETF, lines, asn1) and decoded, comes back equal. For
// asn1 the frames are not cut again here (the deframer harness checks BER
// framing against its own reader): its events must be of the kinds a frame
// body allows, and agree however the stream is fed.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fuzz_support.hpp"
#include "protocol/control_codec.hpp"

namespace tlsport::fuzz {
namespace {

using nlohmann::json;
using protocol::ControlDecoder;
using protocol::ControlEncoder;
using protocol::ControlEncoding;
using protocol::ControlError;
using protocol::InboundMessage;
using protocol::TermFormat;

/// Message caps to try.
constexpr std::size_t kCaps[] = {1, 2, 5, 6, 16, 64, 255, 256, 300, 4096, 65535, 1 << 20};

/// One thing the decoder reported.
struct Event {
  json message;          ///< a command, or {"id":…,"data":bytes} for DATA
  ControlError error{};  ///< a bad report's error (message otherwise)
  bool data = false;     ///< a DATA frame
  bool operator==(const Event& o) const {
    return message == o.message && error == o.error && data == o.data;
  }
};

/// What a decoder made of a stream.
struct Outcome {
  std::vector<Event> events;               ///< in order
  std::error_code fatal;                   ///< frame_too_large, if it came
  std::optional<TermFormat> first_format;  ///< first_term_format() at the end
  bool operator==(const Outcome& o) const {
    return events == o.events && fatal == o.fatal && first_format == o.first_format;
  }
};

/// Feeds the pieces, resuming after each stop with feed("").
Outcome decode(ControlEncoding encoding, unsigned header, std::size_t cap,
               const std::vector<std::string_view>& pieces, bool stop) {
  ControlDecoder decoder(encoding, header, cap);
  Outcome out;
  bool stopped = false;
  auto on_message = [&](InboundMessage& m) {
    FUZZ_CHECK(!stopped);
    Event e;
    if (m.kind == InboundMessage::Kind::data) {
      e.data = true;
      e.message = {
          {"id", m.socket_id},
          {"data", json::binary(json::binary_t::container_type(m.data.begin(), m.data.end()))}};
    } else {
      FUZZ_CHECK(m.command.is_object());
      e.message = std::move(m.command);
    }
    out.events.push_back(std::move(e));
    stopped = stop;
    return !stop;
  };
  auto on_bad = [&](ControlError error, const std::string& detail) {
    FUZZ_CHECK(!protocol::is_fatal(error) && !detail.empty());
    out.events.push_back(Event{json(), error});
  };
  for (const auto piece : pieces) {
    std::string copy(piece);  // scribbled over afterwards: no view may outlive the feed
    stopped = false;
    std::error_code e = decoder.feed(copy, on_message, on_bad);
    copy.assign(copy.size(), '\xEE');
    while (!e && stopped) {
      stopped = false;
      e = decoder.feed("", on_message, on_bad);
    }
    if (e) {
      FUZZ_CHECK(e == ControlError::frame_too_large);
      out.fatal = e;
      // A dead decoder stays dead.
      FUZZ_CHECK(decoder.feed("{}\n", on_message, on_bad) == e);
      break;
    }
  }
  out.first_format = decoder.first_term_format();
  return out;
}

/// JSON whitespace.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// The frame bodies or non-blank lines of a whole stream, cut independently of
/// the Deframer; `fatal` when a header or line is over the cap.
std::vector<std::string_view> units(ControlEncoding encoding, unsigned header, std::size_t cap,
                                    std::string_view stream, bool& fatal) {
  std::vector<std::string_view> out;
  fatal = false;
  while (!stream.empty()) {
    if (encoding == ControlEncoding::binary) {
      if (stream.size() < header) break;
      std::uint64_t length = 0;
      for (unsigned i = 0; i < header; ++i) length = length << 8 | std::uint8_t(stream[i]);
      if (length > cap) {
        fatal = true;
        break;
      }
      if (stream.size() - header < length) break;
      out.push_back(stream.substr(header, length));
      stream.remove_prefix(header + length);
      continue;
    }
    const auto nl = stream.substr(0, std::min(stream.size(), cap)).find('\n');
    if (nl == std::string_view::npos) {
      fatal = stream.size() >= cap;
      break;
    }
    std::string_view line = stream.substr(0, nl);
    stream.remove_prefix(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    bool blank = true;
    for (char c : line) blank = blank && is_space(c);
    if (!blank) out.push_back(line);
  }
  return out;
}

/// Checks that an event is one the unit's bytes allow.
void check_event(ControlEncoding encoding, std::string_view unit, const Event& e) {
  using CE = ControlError;
  const bool bad = e.message.is_null();
  if (encoding == ControlEncoding::lines) {
    FUZZ_CHECK(!bad || e.error == CE::bad_json || e.error == CE::not_an_object);
    return;
  }
  if (unit.empty()) {
    FUZZ_CHECK(bad && e.error == CE::empty_frame);
    return;
  }
  const auto type = static_cast<std::uint8_t>(unit[0]);
  if (type == protocol::kFrameData) {
    if (unit.size() < 5) {
      FUZZ_CHECK(bad && e.error == CE::short_data_frame);
      return;
    }
    FUZZ_CHECK(!bad);
    std::uint32_t id = 0;
    for (int i = 1; i <= 4; ++i) id = id << 8 | std::uint8_t(unit[i]);
    const auto& data = e.message.at("data").get_binary();
    FUZZ_CHECK(e.message.at("id") == id);
    FUZZ_CHECK(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()) ==
               unit.substr(5));
    return;
  }
  if (type != protocol::kFrameControl) {
    FUZZ_CHECK(bad && e.error == CE::bad_frame_type);
    return;
  }
  const bool etf = unit.size() > 1 && static_cast<std::uint8_t>(unit[1]) == 131;
  if (etf) {
    FUZZ_CHECK(!bad || e.error == CE::bad_term || e.error == CE::not_an_object);
  } else {
    FUZZ_CHECK(!bad || e.error == CE::bad_term || e.error == CE::bad_json ||
               e.error == CE::not_an_object);
    if (bad && e.error == CE::bad_term) FUZZ_CHECK(unit.size() == 1);  // no term at all
  }
}

/// True when every string and key in `v` is valid UTF-8 (JSON text can carry only that).
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<std::uint8_t>(s[i]);
    std::size_t n = c < 0x80                 ? 0
                    : c >= 0xC2 && c <= 0xDF ? 1
                    : c >= 0xE0 && c <= 0xEF ? 2
                    : c >= 0xF0 && c <= 0xF4 ? 3
                                             : 9;
    if (n == 9 || s.size() - i - 1 < n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<std::uint8_t>(s[i + k]);
      std::uint8_t lo = 0x80, hi = 0xBF;
      if (k == 1 && c == 0xE0) lo = 0xA0;
      if (k == 1 && c == 0xED) hi = 0x9F;
      if (k == 1 && c == 0xF0) lo = 0x90;
      if (k == 1 && c == 0xF4) hi = 0x8F;
      if (b < lo || b > hi) return false;
    }
    i += n + 1;
  }
  return true;
}

/// True when `v` holds only what JSON text can say: valid UTF-8, no binaries.
bool json_expressible(const json& v) {
  if (v.is_binary()) return false;
  if (v.is_string()) return valid_utf8(v.get_ref<const std::string&>());
  if (v.is_object()) {
    for (const auto& [k, item] : v.items()) {
      if (!valid_utf8(k) || !json_expressible(item)) return false;
    }
  }
  if (v.is_array()) {
    for (const auto& item : v) {
      if (!json_expressible(item)) return false;
    }
  }
  return true;
}

/// Encodes a command again and decodes it: it must come back equal.
void check_round_trip(const json& command) {
  json rest = command;
  rest.erase("data");
  const auto data = command.find("data");
  const bool data_is_bytes = data == command.end() || data->is_binary();
  struct Way {
    ControlEncoding encoding;  ///< channel encoding
    TermFormat format;         ///< term format in binary frames
    bool applies;              ///< whether the command survives this way unchanged
  };
  // JSON says neither bytes (other than "data", as base64) nor invalid UTF-8;
  // in ETF a string is a binary, so bytes under a non-binary "data" would come
  // back as bytes, and "text" (when kept) could turn into "data".
  const bool json_ok = data_is_bytes && json_expressible(rest);
  const bool etf_ok = data_is_bytes && !command.contains("text");
  const Way ways[] = {{ControlEncoding::lines, TermFormat::json, json_ok},
                      {ControlEncoding::binary, TermFormat::json, json_ok},
                      {ControlEncoding::binary, TermFormat::etf, etf_ok},
                      {ControlEncoding::asn1, TermFormat::json, json_ok},
                      {ControlEncoding::asn1, TermFormat::etf, etf_ok}};
  for (const Way& way : ways) {
    if (!way.applies) continue;
    const ControlEncoder encoder(way.encoding, 4, way.format);
    std::string wire;
    FUZZ_CHECK(encoder.append_message(wire, command));
    ControlDecoder decoder(way.encoding, 4, std::size_t{1} << 30);
    std::vector<json> back;
    std::string why;
    const auto e = decoder.feed(
        wire,
        [&](InboundMessage& m) {
          back.push_back(m.command);
          return true;
        },
        [&](ControlError, const std::string& detail) { why = detail; });
    FUZZ_CHECK(!e && decoder.buffered() == 0);
    // Term counts differ between JSON and ETF (an array's elements vs its
    // commas): a command just under one cap may be over the other.
    if (back.empty() && why.find("more than") != std::string::npos) continue;
    FUZZ_CHECK(back.size() == 1);
    FUZZ_CHECK(back[0] == command);
  }
}

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  InputReader input(data, size);
  const std::uint8_t how = input.byte();
  // how % 4 == 3: lines, or asn1 when the top bit is set too.
  const ControlEncoding encoding = how % 4 != 3 ? ControlEncoding::binary
                                   : how & 0x80 ? ControlEncoding::asn1
                                                : ControlEncoding::lines;
  const unsigned header = how % 4 == 0 ? 1 : how % 4 == 1 ? 2 : 4;
  const bool stop = (how / 4) % 2 == 1;
  const std::size_t cap = kCaps[input.byte() % std::size(kCaps)];
  const std::uint16_t split = input.u16();
  const std::string_view stream = input.rest();
  const std::size_t at = split % (stream.size() + 1);

  const Outcome got =
      decode(encoding, header, cap, {stream.substr(0, at), stream.substr(at)}, stop);
  const Outcome whole = decode(encoding, header, cap, {stream}, false);
  FUZZ_CHECK(got == whole);

  if (encoding == ControlEncoding::asn1) {
    using CE = ControlError;
    for (const Event& e : whole.events) {
      if (e.message.is_null()) {
        FUZZ_CHECK(e.error == CE::not_an_octet_string || e.error == CE::empty_frame ||
                   e.error == CE::short_data_frame || e.error == CE::bad_frame_type ||
                   e.error == CE::bad_term || e.error == CE::bad_json ||
                   e.error == CE::not_an_object);
      } else if (!e.data) {
        check_round_trip(e.message);
      }
    }
    return 0;
  }

  bool fatal = false;
  const auto bodies = units(encoding, header, cap, stream, fatal);
  FUZZ_CHECK(whole.fatal.operator bool() == fatal);
  FUZZ_CHECK(whole.events.size() == bodies.size());
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    check_event(encoding, bodies[i], whole.events[i]);
    FUZZ_CHECK(whole.events[i].data == (encoding == ControlEncoding::binary && !bodies[i].empty() &&
                                        bodies[i][0] == tlsport::protocol::kFrameData &&
                                        !whole.events[i].message.is_null()));
    if (whole.events[i].message.is_object() && !whole.events[i].data) {
      check_round_trip(whole.events[i].message);
    }
  }
  return 0;
}
