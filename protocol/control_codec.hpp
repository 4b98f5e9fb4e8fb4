// The control channel's two encodings (docs/protocol.md §1): binary frames
// ({packet,N} header, CONTROL or DATA body) and lines (one JSON object per
// line). Pure and I/O-free: bytes in, messages out; messages in, bytes out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "protocol/framing.hpp"

namespace tlsport::protocol {

/// How a control channel is encoded.
enum class ControlEncoding {
  binary,  ///< {packet,N} frames: CONTROL (0x00) + term, or DATA (0x01) + id + bytes
  lines,   ///< one JSON object per line, data as base64 (the control channel's "raw")
  asn1,    ///< one BER OCTET STRING per message, its contents a binary frame body
};

/// How structured terms are written inside binary CONTROL frames.
enum class TermFormat {
  json,  ///< UTF-8 JSON text
  etf,   ///< Erlang external term format (version byte 131)
};

/// Body type bytes of binary frames.
inline constexpr std::uint8_t kFrameControl = 0x00;
inline constexpr std::uint8_t kFrameData = 0x01;

/// Why a message from a client could not be understood.
enum class ControlError {
  frame_too_large = 1,  ///< a frame header or line over the cap: fatal (framing lost)
  empty_frame,          ///< a binary frame with no body
  bad_frame_type,       ///< a binary frame whose first byte is neither 0x00 nor 0x01
  short_data_frame,     ///< a DATA frame shorter than its 4-byte socket id
  bad_term,             ///< malformed ETF
  bad_json,             ///< malformed JSON
  not_an_object,        ///< a term that is not a map/object
  not_an_octet_string,  ///< asn1: a TLV that is not an OCTET STRING of primitive segments
};
const std::error_category& control_category();
std::error_code make_error_code(ControlError e);
/// True for errors after which the channel cannot be resynchronised.
bool is_fatal(ControlError e);

/// One message from a client.
struct InboundMessage {
  enum class Kind { command, data };
  Kind kind = Kind::command;    ///< a structured command, or a binary DATA frame (deliver)
  nlohmann::json command;       ///< Kind::command: the object; "data" (base64) and "text"
                                ///< are turned into a binary value under "data"
  std::uint32_t socket_id = 0;  ///< Kind::data: the target socket
  std::string_view data;        ///< Kind::data: the bytes (valid during the callback only)
};

/// Incremental decoder for one control channel.
class ControlDecoder {
 public:
  /// header_bytes: 1, 2 or 4 (binary only); max_message: cap on one frame body or line.
  ControlDecoder(ControlEncoding encoding, unsigned header_bytes, std::size_t max_message);

  /// Feeds bytes from the client. For each message calls
  /// `on_message(InboundMessage&)`, which returns true to go on or false to stop
  /// (input-side backpressure: the rest is kept, feed("") resumes). For a
  /// message that cannot be understood calls `on_bad(ControlError, const
  /// std::string& detail)` and goes on with the next. Returns
  /// ControlError::frame_too_large (fatal) when framing is lost; the decoder is
  /// then dead.
  template <class OnMessage, class OnBad>
  std::error_code feed(std::string_view in, OnMessage&& on_message, OnBad&& on_bad);

  /// The term format of the first CONTROL frame seen (binary), if any.
  std::optional<TermFormat> first_term_format() const { return first_format_; }

  /// Bytes held inside (an incomplete frame or input left by a stop).
  std::size_t buffered() const { return deframer_.buffered(); }

  ControlEncoding encoding() const { return encoding_; }

 private:
  /// Decodes one whole frame body or line; returns false when on_message stopped.
  template <class OnMessage, class OnBad>
  bool handle(std::string_view body, OnMessage& on_message, OnBad& on_bad);
  /// Parses a structured term (ETF or JSON) into `out`; error otherwise.
  ControlError parse_term(std::string_view term, nlohmann::json& out, std::string& detail);

  /// What one frame body or line turned out to be.
  enum class Decoded { message, skip, bad };
  /// The callback-free part of handle(): fills `message`, or `error` and `detail`.
  Decoded decode(std::string_view body, InboundMessage& message, ControlError& error,
                 std::string& detail);

  ControlEncoding encoding_;                ///< binary frames or lines
  Deframer deframer_;                       ///< packet:N or line framing of the input
  std::optional<TermFormat> first_format_;  ///< format of the first CONTROL term
  bool dead_ = false;                       ///< framing was lost; every feed fails
  /// asn1: the segments of the current constructed OCTET STRING, joined (a
  /// DATA frame's bytes point into it during the callback).
  std::string joined_;
  /// Larger buffers are given back after their frame.
  static constexpr std::size_t kKeptJoinedCapacity = 64u << 10;
};

/// Encoder for one control channel: appends whole framed messages to a buffer.
class ControlEncoder {
 public:
  ControlEncoder(ControlEncoding encoding, unsigned header_bytes, TermFormat format);

  void set_term_format(TermFormat format) { format_ = format; }
  TermFormat term_format() const { return format_; }
  ControlEncoding encoding() const { return encoding_; }

  /// Appends a reply or event. Binary values (e.g. "data") become base64 in
  /// JSON and binaries in ETF. Returns false (appending nothing) when the
  /// message does not fit one frame of this channel's header size.
  bool append_message(std::string& out, const nlohmann::json& message) const;

  /// Appends a fromsocket event for `socket_id` carrying `data`: a DATA frame
  /// (binary) or a JSON line with base64 data (lines), built without a JSON
  /// library on this path. Returns false when it does not fit one frame; see
  /// max_data_per_frame().
  bool append_data(std::string& out, std::uint32_t socket_id, std::string_view data) const;

  /// The most data bytes one fromsocket frame can carry on this channel.
  std::size_t max_data_per_frame() const;

 private:
  /// Largest frame body the N-byte header can announce.
  std::size_t max_body() const;
  /// Writes the N-byte big-endian header for `body` bytes at out[at].
  void put_header(std::string& out, std::size_t at, std::size_t body) const;

  ControlEncoding encoding_;  ///< binary frames or lines
  unsigned header_bytes_;     ///< N of {packet,N} (binary)
  TermFormat format_;         ///< how CONTROL terms are written (binary)
};

}  // namespace tlsport::protocol

namespace std {
template <>
struct is_error_code_enum<tlsport::protocol::ControlError> : true_type {};
}  // namespace std

#include "protocol/control_codec_impl.hpp"
