// Fuzz target: the socket Deframer in every mode (raw, packet:1/2/4, asn1 with
// the BER scanner, line).
//
// Input: byte 0 picks the mode and how the consumer drives flow control, byte
// 1 the packet_size cap (mostly small ones), bytes 2-3 where the rest is split
// in two, byte 4 how many more times the second piece is fed (so that packets
// much longer than an input, and large caps, are reached); the rest is the
// byte stream.
//
// Checked against a reference that cuts the whole stream at once (an
// independent BER reader for asn1): the same packets, the same error, the same
// bytes left held, whether fed whole or in pieces, with stops and resumes.
// So packets concatenate (with their headers) to a prefix of the stream and
// nothing over the cap is handed out. No allocation goes beyond the larger of
// the cap and the bytes held, plus the 64 KiB reserve; has_packet() tells the
// truth; a dead deframer stays dead.
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fuzz_support.hpp"
#include "protocol/framing.hpp"

namespace tlsport::fuzz {
namespace {

using protocol::Deframer;
using protocol::Framing;
using protocol::FramingError;
using protocol::FramingKind;

/// What the reserve ahead of held bytes may be (framing.cpp's kReserveAhead).
constexpr std::size_t kReserveAhead = 64 * 1024;
/// Slack for an allocation: std::string's terminator and rounding.
constexpr std::size_t kSlack = 64;

/// packet_size caps to try: small ones often, the big ones to test reserving.
constexpr std::size_t kCaps[] = {1,     2,     3,     4,      5,       7,         8,
                                 16,    100,   255,   256,    1000,    4096,      65535,
                                 65536, 70000, 99999, 600000, 1 << 20, 64u << 20, 1u << 30};

/// How the consumer answers on_packet.
enum class Flow {
  go,          ///< always goes on
  stop_drain,  ///< stops after each packet, resumes with feed("") while has_packet()
  stop_feed,   ///< stops after each packet but feeds the next piece at once
  alternate,   ///< stops after every other packet, drains before the next piece
};

/// What a deframer made of a stream.
struct Outcome {
  std::vector<std::string> packets;  ///< packets handed out, in order
  std::error_code error;             ///< the first error
  std::size_t held = 0;              ///< buffered() at the end
};

bool same(const Outcome& a, const Outcome& b) {
  return a.packets == b.packets && a.error == b.error && a.held == b.held;
}

/// An independent reader of one BER TLV (X.690), written as recursive descent
/// over the whole bytes rather than as a resumable state machine: the same
/// rules and caps as BerScanner, in the same order, so the same verdicts.
class ReferenceBer {
 public:
  /// How a read ended.
  enum Verdict { ok, need_more, bad, too_large, too_deep };

  ReferenceBer(std::string_view bytes, std::size_t cap) : bytes_(bytes), cap_(cap) {}

  /// Reads the TLV at the start; on ok, length() is its size.
  Verdict read() {
    bool eoc = false;
    return element(0, eoc);
  }
  std::size_t length() const { return pos_; }

 private:
  /// One header byte: checked against the cap once it is there.
  Verdict header_byte(std::uint8_t& b) {
    if (pos_ >= bytes_.size()) return need_more;
    if (pos_ >= cap_) return too_large;
    b = static_cast<std::uint8_t>(bytes_[pos_++]);
    return ok;
  }

  /// One element, inside `open` open indefinite-length encodings; `eoc` says
  /// it was an end-of-contents marker.
  Verdict element(unsigned open, bool& eoc) {
    std::uint8_t b = 0;
    if (Verdict v = header_byte(b); v != ok) return v;
    const bool constructed = (b & 0x20) != 0;
    const bool zero_tag = b == 0;
    if ((b & 0x1F) == 0x1F) {  // high tag number: at most 4 bytes, no 0x80 first
      for (unsigned n = 1;; ++n) {
        if (Verdict v = header_byte(b); v != ok) return v;
        if (n == 1 && b == 0x80) return bad;
        if ((b & 0x80) == 0) break;
        if (n == 4) return bad;
      }
    }
    if (Verdict v = header_byte(b); v != ok) return v;
    if (zero_tag) {  // end-of-contents: 00 00 inside an indefinite encoding only
      if (b != 0 || open == 0) return bad;
      eoc = true;
      return ok;
    }
    std::uint64_t length = 0;
    if (b == 0x80) {
      if (!constructed) return bad;
      if (open == 64) return too_deep;
      for (;;) {
        bool end = false;
        if (Verdict v = element(open + 1, end); v != ok) return v;
        if (end) return ok;
      }
    }
    if (b < 0x80) {
      length = b;
    } else {
      if (b == 0xFF || (b & 0x7F) > 8) return bad;
      for (unsigned n = b & 0x7F; n > 0; --n) {
        if (Verdict v = header_byte(b); v != ok) return v;
        length = length << 8 | b;
      }
    }
    if (length > cap_ - pos_) return too_large;
    if (length > bytes_.size() - pos_) return need_more;
    pos_ += static_cast<std::size_t>(length);
    return ok;
  }

  std::string_view bytes_;  ///< the bytes from the TLV's start
  std::size_t cap_;         ///< cap on the whole TLV
  std::size_t pos_ = 0;     ///< next byte
};

/// The packets of the whole stream, cut in one pass (not for raw).
Outcome reference(const Framing& framing, std::size_t cap, std::string_view stream) {
  Outcome out;
  std::size_t at = 0;
  while (at < stream.size()) {
    const std::string_view rest = stream.substr(at);
    std::size_t take = 0;  // whole packet, header included
    std::size_t skip = 0;  // header bytes not handed out
    if (framing.kind == FramingKind::packet) {
      const std::size_t n = framing.header_bytes;
      if (rest.size() < n) break;
      std::uint64_t length = 0;
      for (std::size_t i = 0; i < n; ++i) length = length << 8 | static_cast<std::uint8_t>(rest[i]);
      if (length > cap) {
        out.error = FramingError::packet_too_large;
        break;
      }
      if (rest.size() - n < length) break;
      take = n + static_cast<std::size_t>(length);
      skip = n;
    } else if (framing.kind == FramingKind::line) {
      const std::size_t nl = rest.substr(0, std::min(rest.size(), cap)).find('\n');
      if (nl == std::string_view::npos) {
        if (rest.size() >= cap) out.error = FramingError::packet_too_large;
        break;
      }
      take = nl + 1;
    } else {
      ReferenceBer ber(rest, cap);
      const auto verdict = ber.read();
      if (verdict == ReferenceBer::need_more) break;
      if (verdict == ReferenceBer::bad) out.error = FramingError::ber_bad_encoding;
      if (verdict == ReferenceBer::too_large) out.error = FramingError::packet_too_large;
      if (verdict == ReferenceBer::too_deep) out.error = FramingError::ber_too_deep;
      if (out.error) break;
      take = ber.length();
    }
    out.packets.emplace_back(rest.substr(skip, take - skip));
    at += take;
  }
  out.held = out.error ? 0 : stream.size() - at;
  return out;
}

/// Drives one Deframer over the pieces like a connection would, checking each
/// call's allocations and has_packet() on the way.
class Driver {
 public:
  Driver(const Framing& framing, std::size_t cap, Flow flow)
      : deframer_(framing, cap), flow_(flow), packet_bound_(cap + framing.header_bytes) {}

  /// Feeds the pieces in order and drains at the end.
  Outcome run(const std::vector<std::string_view>& pieces) {
    for (const std::string_view piece : pieces) {
      // Fed from a copy that is scribbled over afterwards: a deframer keeping
      // views of old input would hand out the scribbles.
      std::string copy(piece);
      if (!feed(copy)) return finish();
      copy.assign(copy.size(), '\xEE');
      if (flow_ != Flow::stop_feed && !drain()) return finish();
    }
    if (flow_ == Flow::stop_feed) drain();
    return finish();
  }

 private:
  /// One feed call; false once the deframer has failed.
  bool feed(std::string_view in) {
    const std::size_t budget =
        std::max(packet_bound_, deframer_.buffered() + in.size()) + kReserveAhead + kSlack;
    stopped_ = false;
    AllocationWatch::arm();
    const std::error_code error = deframer_.feed(in, [&](std::string_view packet) {
      AllocationWatch::pause();
      FUZZ_CHECK(!stopped_);  // a stop is honoured at once
      out_.packets.emplace_back(packet);
      bool go = true;
      if (flow_ == Flow::stop_drain || flow_ == Flow::stop_feed) go = false;
      if (flow_ == Flow::alternate) go = out_.packets.size() % 2 == 0;
      stopped_ = !go;
      AllocationWatch::resume();
      return go;
    });
    AllocationWatch::pause();
    if (AllocationWatch::available()) FUZZ_CHECK(AllocationWatch::largest() <= budget);
    if (error) {
      out_.error = error;
      FUZZ_CHECK(deframer_.buffered() == 0);  // a failed deframer holds nothing
      // ... and stays dead.
      FUZZ_CHECK(deframer_.feed("x\n", [](std::string_view) { return true; }) == error);
      FUZZ_CHECK(!deframer_.has_packet());
      return false;
    }
    return true;
  }

  /// Resumes while whole packets are held; false once the deframer has failed.
  bool drain() {
    for (;;) {
      AllocationWatch::arm();
      resumable_ = deframer_.has_packet();
      AllocationWatch::pause();
      if (AllocationWatch::available()) FUZZ_CHECK(AllocationWatch::largest() == 0);
      const std::size_t before = out_.packets.size();
      if (!feed("")) return false;
      // A resume hands out a packet exactly when has_packet() said so.
      FUZZ_CHECK((out_.packets.size() > before) == resumable_);
      if (!resumable_) return true;
    }
  }

  /// The outcome so far.
  Outcome finish() {
    out_.held = deframer_.buffered();
    return out_;
  }

  Deframer deframer_;         ///< under test
  Flow flow_;                 ///< how on_packet answers
  std::size_t packet_bound_;  ///< the largest packet with its header
  Outcome out_;               ///< what came out
  bool stopped_ = false;      ///< on_packet said stop during this feed
  bool resumable_ = false;    ///< has_packet() before this feed("")
};

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tlsport::fuzz::AllocationWatch::install();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  using tlsport::protocol::parse_framing;
  InputReader input(data, size);
  static const char* const kModes[] = {"raw", "packet:1", "packet:2", "packet:4", "asn1", "line"};
  const std::uint8_t how = input.byte();
  const Framing framing = *parse_framing(kModes[how % 6]);
  const Flow flow = static_cast<Flow>(how / 6 % 4);
  const std::size_t cap = kCaps[input.byte() % std::size(kCaps)];
  const std::uint16_t split = input.u16();
  const unsigned repeat = input.byte();
  const std::string_view bytes = input.rest();
  const std::size_t at = split % (bytes.size() + 1);

  std::vector<std::string_view> pieces = {bytes.substr(0, at)};
  std::string stream(bytes);
  for (unsigned i = 0; i <= repeat && at < bytes.size(); ++i) {
    pieces.push_back(bytes.substr(at));
    if (i > 0) stream += bytes.substr(at);
  }

  Driver split_driver(framing, cap, flow);
  const Outcome got = split_driver.run(pieces);
  Driver whole_driver(framing, cap, Flow::go);
  const Outcome whole = whole_driver.run({stream});

  if (framing.kind == FramingKind::raw) {
    // Each non-empty piece is one packet, as it came.
    std::vector<std::string> want;
    for (const auto piece : pieces) {
      if (!piece.empty()) want.emplace_back(piece);
    }
    FUZZ_CHECK(got.packets == want && !got.error && got.held == 0);
    FUZZ_CHECK(whole.packets.size() == (stream.empty() ? 0u : 1u));
    return 0;
  }
  const Outcome want = reference(framing, cap, stream);
  for (const auto& packet : got.packets) {
    FUZZ_CHECK(packet.size() <= cap);  // nothing over the cap is handed out
    if (framing.kind == FramingKind::line) {
      FUZZ_CHECK(!packet.empty() && packet.find('\n') == packet.size() - 1);
    }
  }
  FUZZ_CHECK(same(got, want));
  FUZZ_CHECK(same(whole, want));
  return 0;
}
