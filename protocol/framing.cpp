// Socket framing modes: names, errors, headers and the deframer's non-template
// part. See framing.hpp.
#include "protocol/framing.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tlsport::protocol {
namespace {

/// Capacity an empty buffer may keep: enough to absorb the usual small split
/// packet without reallocating, too little to matter on an idle socket.
constexpr std::size_t kKeepCapacity = 1024;
/// How far ahead of the bytes held a split packet's buffer is reserved.
constexpr std::size_t kReserveAhead = 64 * 1024;

/// Header length for a packet-mode N, or nullopt when N is not 0, 1, 2 or 4.
std::optional<unsigned> packet_header(char n) {
  switch (n) {
    case '0':
      return 0u;
    case '1':
      return 1u;
    case '2':
      return 2u;
    case '4':
      return 4u;
    default:
      return std::nullopt;
  }
}

/// {packet,N} / {binary_packet,N} with header length N; N = 0 is raw.
Framing packet_framing(unsigned header_bytes, bool binary) {
  Framing f;
  f.kind = header_bytes == 0 ? FramingKind::raw : FramingKind::packet;
  f.header_bytes = header_bytes;
  f.binary = binary;
  return f;
}

/// Parses "<prefix>N" (one digit) as a packet framing; nullopt if no match.
std::optional<Framing> parse_packet(std::string_view name, std::string_view prefix,
                                    std::string_view suffix, bool binary) {
  if (name.size() != prefix.size() + 1 + suffix.size()) return std::nullopt;
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  if (name.substr(prefix.size() + 1) != suffix) return std::nullopt;
  const auto n = packet_header(name[prefix.size()]);
  if (!n) return std::nullopt;
  return packet_framing(*n, binary);
}

/// Error category of FramingError, with messages for people reading logs.
class FramingCategory final : public std::error_category {
 public:
  /// Shown with the code in logs: "tlsport.framing:1".
  const char* name() const noexcept override { return "tlsport.framing"; }

  /// For people: what went wrong with the peer's byte stream.
  std::string message(int ev) const override {
    switch (static_cast<FramingError>(ev)) {
      case FramingError::packet_too_large:
        return "packet larger than the packet_size limit";
      case FramingError::ber_bad_encoding:
        return "malformed BER (ASN.1) header";
      case FramingError::ber_too_deep:
        return "BER indefinite-length encodings nested too deep";
    }
    return "unknown framing error";
  }

  /// Lets generic code test for std::errc::message_size / bad_message.
  std::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<FramingError>(ev)) {
      case FramingError::packet_too_large:
        return std::errc::message_size;
      case FramingError::ber_bad_encoding:
      case FramingError::ber_too_deep:
        return std::errc::bad_message;
    }
    return std::error_condition(ev, *this);
  }
};

}  // namespace

std::optional<Framing> parse_framing(std::string_view name) {
  if (name == "raw") return packet_framing(0, false);
  if (name == "onebyte") return packet_framing(1, false);
  if (name == "twobytes") return packet_framing(2, false);
  if (name == "fourbytes") return packet_framing(4, false);
  if (name == "asn1") return Framing{FramingKind::asn1, 0, false};
  if (name == "line") return Framing{FramingKind::line, 0, false};
  for (const bool binary : {false, true}) {
    const std::string_view word = binary ? "binary_packet" : "packet";
    const std::string colon = std::string(word) + ":";
    const std::string brace = "{" + std::string(word) + ",";
    if (auto f = parse_packet(name, colon, "", binary)) return f;
    if (auto f = parse_packet(name, brace, "}", binary)) return f;
  }
  return std::nullopt;
}

std::string framing_name(const Framing& framing) {
  switch (framing.kind) {
    case FramingKind::raw:
      // binary_packet:0 keeps its client-side flag, so its name must too.
      return framing.binary ? "binary_packet:0" : "raw";
    case FramingKind::packet:
      return (framing.binary ? "binary_packet:" : "packet:") + std::to_string(framing.header_bytes);
    case FramingKind::asn1:
      return "asn1";
    case FramingKind::line:
      return "line";
  }
  return "raw";
}

const std::error_category& framing_category() {
  static const FramingCategory category;
  return category;
}

std::error_code make_error_code(FramingError e) {
  return {static_cast<int>(e), framing_category()};
}

std::optional<std::size_t> encode_header(const Framing& framing, std::size_t payload_size,
                                         std::uint8_t out[4]) {
  if (framing.kind != FramingKind::packet) return 0;
  const unsigned n = framing.header_bytes;
  if (n != 1 && n != 2 && n != 4) return std::nullopt;
  // Compare in 64 bits: 1 << 32 must not overflow where size_t is 32 bits.
  if (static_cast<std::uint64_t>(payload_size) >= (std::uint64_t{1} << (8 * n))) {
    return std::nullopt;
  }
  for (unsigned i = 0; i < n; ++i) {
    out[i] = static_cast<std::uint8_t>(payload_size >> (8 * (n - 1 - i)));
  }
  return n;
}

Deframer::Deframer(Framing framing, std::size_t max_packet)
    : framing_(framing),
      max_packet_(max_packet),
      ber_(framing.kind == FramingKind::asn1 ? std::make_unique<BerScanner>(max_packet) : nullptr) {
  // {packet,0} is raw by definition (seed 004); other sizes are not framings.
  if (framing_.kind == FramingKind::packet && framing_.header_bytes == 0) {
    framing_.kind = FramingKind::raw;
  }
  assert(framing_.kind != FramingKind::packet || framing_.header_bytes == 1 ||
         framing_.header_bytes == 2 || framing_.header_bytes == 4);
}

bool Deframer::has_packet() const {
  if (error_ || framing_.kind == FramingKind::raw || buffered() == 0) return false;
  const Probe p = probe(std::string_view(buffer_.data() + start_, buffered()), {});
  // An error counts: resuming with feed("") is how the caller learns of it.
  return p.error || p.total != 0;
}

Deframer::Probe Deframer::probe(std::string_view head, std::string_view tail) const {
  Probe p;
  const std::size_t have = head.size() + tail.size();
  switch (framing_.kind) {
    case FramingKind::raw:
      p.total = have;  // not reached: feed() hands raw chunks straight out
      break;

    case FramingKind::packet: {
      // At most 8 header bytes are read, so the length fits in 64 bits even
      // with an invalid header_bytes (asserted against in the constructor).
      const std::size_t n = std::min<std::size_t>(framing_.header_bytes, 8);
      if (have < n) break;
      std::uint64_t length = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const char c = i < head.size() ? head[i] : tail[i - head.size()];
        length = (length << 8) | static_cast<std::uint8_t>(c);
      }
      if (length > max_packet_ || length > SIZE_MAX - n) {
        p.error = make_error_code(FramingError::packet_too_large);
        break;
      }
      p.header = n;
      const std::size_t total = n + static_cast<std::size_t>(length);
      if (have >= total) {
        p.total = total;
      } else {
        p.expect = total;
      }
      break;
    }

    case FramingKind::asn1: {
      // The scanner has consumed a prefix of head (the held bytes): continue
      // it over the rest of head, then over tail.
      BerScanner::Result r;
      std::size_t done = ber_->consumed();
      if (done <= head.size()) {
        r = ber_->advance(head.substr(done));
        done = ber_->consumed();
      }
      if (r.status == BerScanner::Status::need_more && done >= head.size() &&
          done - head.size() < tail.size()) {
        r = ber_->advance(tail.substr(done - head.size()));
      }
      if (r.status == BerScanner::Status::complete) {
        p.total = r.length;
      } else if (r.status == BerScanner::Status::error) {
        p.error = r.error;
      } else {
        p.expect = ber_->known_length();
      }
      break;
    }

    case FramingKind::line: {
      // A packet is the line with its '\n', at most max_packet_ bytes: look
      // no further than that, and from where the previous look stopped.
      const std::size_t limit = std::min(have, max_packet_);
      const std::size_t from = line_scanned_;
      const std::size_t head_end = std::min(limit, head.size());
      if (from < head_end) {
        const void* nl = std::memchr(head.data() + from, '\n', head_end - from);
        if (nl != nullptr) {
          p.total = static_cast<const char*>(nl) - head.data() + 1;
          break;
        }
      }
      if (limit > head.size()) {
        const std::size_t tail_from = std::max(from, head.size()) - head.size();
        const std::size_t tail_end = limit - head.size();
        if (tail_from < tail_end) {
          const void* nl = std::memchr(tail.data() + tail_from, '\n', tail_end - tail_from);
          if (nl != nullptr) {
            p.total = head.size() + (static_cast<const char*>(nl) - tail.data()) + 1;
            break;
          }
        }
      }
      line_scanned_ = std::max(from, limit);
      if (have != 0 && have >= max_packet_) {
        p.error = make_error_code(FramingError::packet_too_large);
      }
      break;
    }
  }
  return p;
}

void Deframer::compact() {
  buffer_.erase(0, start_);
  start_ = 0;
}

void Deframer::hold(std::string_view rest, std::size_t expect) {
  if (rest.empty()) return;
  // Compact when the dead prefix outweighs the live bytes, or when the string
  // would reallocate anyway (no point copying dead bytes along): amortised O(1).
  if (start_ != 0 && (start_ >= buffered() || buffer_.size() + rest.size() > buffer_.capacity())) {
    compact();
  }
  // Reserve towards the announced length, but only a little ahead of the
  // bytes that actually came: a header alone must not pin a whole packet's
  // worth of memory per connection. Beyond that the string grows geometrically.
  std::size_t have = buffered() + rest.size();
  if (expect > have) buffer_.reserve(start_ + std::min(expect, have + kReserveAhead));
  buffer_.append(rest.data(), rest.size());
}

void Deframer::complete_held(std::string_view part, std::size_t total) {
  compact();
  buffer_.reserve(std::min(total, buffer_.size() + part.size() + kReserveAhead));
  buffer_.append(part.data(), part.size());
}

void Deframer::next_packet() {
  if (ber_) ber_->reset();
  line_scanned_ = 0;
}

std::string Deframer::take_buffered() {
  std::string held = buffer_.substr(start_);
  std::string().swap(buffer_);
  start_ = 0;
  next_packet();
  return held;
}

void Deframer::release_if_empty() {
  if (start_ != buffer_.size()) return;
  start_ = 0;
  if (buffer_.capacity() > kKeepCapacity) {
    std::string().swap(buffer_);
  } else {
    buffer_.clear();
  }
}

std::error_code Deframer::fail(std::error_code error) {
  error_ = error;
  std::string().swap(buffer_);
  start_ = 0;
  return error;
}

}  // namespace tlsport::protocol
