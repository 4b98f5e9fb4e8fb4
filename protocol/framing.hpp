// Socket framing modes of seed 004 (raw, {packet,N}, {binary_packet,N}, asn1)
// plus line mode: how the byte stream of a TLS socket is cut into packets.
// Pure and I/O-free: bytes in, whole packets out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "protocol/ber.hpp"

namespace tlsport::protocol {

/// How a socket's byte stream is cut into packets.
enum class FramingKind {
  raw,     ///< no framing: every chunk read is delivered as it came
  packet,  ///< big-endian length header of 1, 2 or 4 bytes
  asn1,    ///< one whole BER TLV per packet
  line,    ///< one '\n'-terminated line per packet (newline included)
};

/// A socket's framing mode, as named by the `mode` field.
struct Framing {
  FramingKind kind = FramingKind::raw;  ///< the framing
  unsigned header_bytes = 0;            ///< 1, 2 or 4 for packet; else 0
  bool binary = false;                  ///< binary_packet:N (a client-side distinction only)

  bool operator==(const Framing& o) const {
    return kind == o.kind && header_bytes == o.header_bytes && binary == o.binary;
  }
};

/// Parses "raw", "packet:N", "binary_packet:N" (N in 0,1,2,4; N = 0 is raw),
/// "onebyte", "twobytes", "fourbytes", "asn1", "line". Also accepts
/// "{packet,N}" and "{binary_packet,N}". nullopt for anything else.
std::optional<Framing> parse_framing(std::string_view name);

/// The canonical name: "raw", "packet:2", "binary_packet:4", "asn1", "line".
std::string framing_name(const Framing& framing);

/// Errors a deframer reports; each closes the socket it came from.
enum class FramingError {
  packet_too_large = 1,  ///< a header announced more than the packet_size cap
  ber_bad_encoding,      ///< a BER header that is not valid (see ber.hpp)
  ber_too_deep,          ///< indefinite-length nesting beyond the depth cap
};
const std::error_category& framing_category();
std::error_code make_error_code(FramingError e);

/// Writes the header for a payload of `payload_size` bytes into `out`
/// (big-endian, framing.header_bytes long) and returns its length: 0 for
/// raw, asn1 and line (the payload carries its own framing). nullopt when
/// the payload does not fit the header (never truncated).
std::optional<std::size_t> encode_header(const Framing& framing, std::size_t payload_size,
                                         std::uint8_t out[4]);

/// Incremental deframer: feed it bytes as they arrive, it hands out whole
/// packets. A packet lying wholly in the fed bytes is handed out as a view
/// of them (no copy); only a packet split across feeds is assembled in an
/// internal buffer, which is released when it completes. Nothing is
/// allocated for a length before it has been checked against the cap.
class Deframer {
 public:
  /// `max_packet`: the packet_size cap in bytes (payload, not counting the header).
  Deframer(Framing framing, std::size_t max_packet);

  Deframer(const Deframer&) = delete;
  Deframer& operator=(const Deframer&) = delete;
  Deframer(Deframer&&) = default;
  Deframer& operator=(Deframer&&) = default;

  /// Feeds `in`. Calls `on_packet(std::string_view payload)` for each whole
  /// packet in order: packet modes without the header; asn1 the whole TLV;
  /// line the line with its '\n'; raw each non-empty chunk as is.
  /// `on_packet` returns true to go on, false to stop (active-once style
  /// flow control): the rest of the input is then kept inside the deframer
  /// and handed out by later calls (feed with empty input to resume).
  /// Returns the first framing error; after an error the deframer is dead.
  /// The views passed to on_packet are valid only during the call.
  template <class OnPacket>
  std::error_code feed(std::string_view in, OnPacket&& on_packet);

  /// Bytes held inside (an incomplete packet, or input left by a stop).
  std::size_t buffered() const { return buffer_.size() - start_; }

  /// True when whole packets are held inside, waiting for a resume.
  bool has_packet() const;

  /// Takes every byte held (packets kept by a stop, an incomplete packet)
  /// out; the deframer starts afresh. STARTTLS hands them to the handshake.
  std::string take_buffered();

  const Framing& framing() const { return framing_; }

  /// Changes the packet_size cap; applies from the next packet on (a packet
  /// whose header was already accepted keeps the old cap).
  void set_max_packet(std::size_t max_packet) {
    max_packet_ = max_packet;
    if (ber_) ber_->set_max_length(max_packet);
  }

 private:
  /// Outcome of looking at the start of some bytes.
  struct Probe {
    std::size_t header = 0;  ///< bytes of header to skip (packet mode)
    std::size_t total = 0;   ///< whole packet length including header; 0 = need more
    std::size_t expect = 0;  ///< while incomplete: the whole length if already known (to reserve)
    std::error_code error;   ///< framing error, if any
  };
  /// Looks at the packet starting at head[0], its bytes being head then tail
  /// (held bytes, then new input, without joining them). Resumes the scan
  /// state (ber_, line_scanned_), so no byte is scanned twice.
  Probe probe(std::string_view head, std::string_view tail) const;
  /// Moves the held bytes to the front of buffer_, dropping consumed ones.
  void compact();
  /// Keeps `rest` after the held bytes; `expect`: the packet's known total, to reserve once.
  void hold(std::string_view rest, std::size_t expect);
  /// Appends `part`, completing the held packet of `total` bytes (reserved exactly).
  void complete_held(std::string_view part, std::size_t total);
  /// Resets the scan state for the packet after the one just taken.
  void next_packet();
  /// Once nothing is held, drops a large buffer so an idle socket holds no memory.
  void release_if_empty();
  /// Marks the deframer dead with `error`, frees its buffer and returns `error`.
  std::error_code fail(std::error_code error);

  Framing framing_;         ///< the framing (packet:0 normalised to raw)
  std::size_t max_packet_;  ///< cap on a packet handed out (payload only, in packet mode)
  std::string buffer_;      ///< held bytes (incomplete packet / input left by a stop)
  std::size_t start_ = 0;   ///< first unconsumed byte of buffer_
  /// Resumable scan state for asn1 (indefinite lengths); mutable: has_packet()
  /// advances it over held bytes, which feed() would do the same way.
  /// Allocated for asn1 framing only: an 80-byte scanner in every other
  /// socket's deframer would be dead weight.
  mutable std::unique_ptr<BerScanner> ber_;
  /// Bytes of the current line already searched for '\n' (mutable as ber_).
  mutable std::size_t line_scanned_ = 0;
  std::error_code error_;  ///< the first framing error; set = dead
};

}  // namespace tlsport::protocol

namespace std {
template <>
struct is_error_code_enum<tlsport::protocol::FramingError> : true_type {};
}  // namespace std

#include "protocol/framing_impl.hpp"
