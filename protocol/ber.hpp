// Incremental BER (X.690) scanner for the asn1 framing mode: finds where one
// TLV ends as its bytes arrive. Pure and I/O-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

namespace tlsport::protocol {

/// Finds the end of one BER TLV as its bytes arrive, without copying them and
/// without ever looking at a byte twice, so a TLV arriving in many pieces costs
/// O(n) in total, not O(n^2).
///
/// Only what is needed to find the end is parsed: the TLV's own header and,
/// inside indefinite-length contents, each element's header and the
/// end-of-contents marker (00 00). The contents of a definite-length element
/// are skipped unread (their end is known from the header), so the only
/// nesting state is the count of open indefinite-length encodings: it is the
/// whole "stack", and it cannot outgrow max_depth.
///
/// Rejected as FramingError::ber_bad_encoding: a high tag number longer than
/// kMaxTagBytes bytes or padded with a leading 0x80; a long-form length of more
/// than kMaxLengthBytes bytes or the reserved 0xFF; the indefinite form (0x80)
/// on a primitive tag; a tag-0 byte that is not a proper end-of-contents
/// (00 00), or one outside indefinite-length contents.
/// FramingError::packet_too_large: a definite length, or a running total,
/// that would take the TLV beyond max_length (checked as soon as the length is
/// known, before anyone holds bytes for it). FramingError::ber_too_deep: more
/// than max_depth open indefinite-length encodings.
class BerScanner {
 public:
  /// Where a scan stands.
  enum class Status : std::uint8_t {
    need_more,  ///< the TLV is not complete in the bytes seen so far
    complete,   ///< the TLV ends after Result::length bytes
    error,      ///< not valid BER, or over a cap; Result::error says which
  };

  /// Outcome of scan() / advance().
  struct Result {
    Status status = Status::need_more;  ///< where the scan stands
    std::size_t length = 0;             ///< whole TLV length (header included) when complete
    std::error_code error;              ///< a FramingError when status is error
  };

  /// Default cap on open indefinite-length encodings: far beyond real use, small
  /// enough that hostile nesting is refused early.
  static constexpr unsigned kDefaultMaxDepth = 64;
  /// Most continuation bytes of a high tag number (28 bits of tag number).
  static constexpr unsigned kMaxTagBytes = 4;
  /// Most bytes of a long-form length (X.690 allows 126; 8 covers any size_t).
  static constexpr unsigned kMaxLengthBytes = 8;

  /// `max_length`: cap on the whole TLV, header included. `max_depth`: cap on
  /// nested indefinite-length encodings (the outermost one counts as 1).
  explicit BerScanner(std::size_t max_length = SIZE_MAX, unsigned max_depth = kDefaultMaxDepth);

  /// Forgets the current TLV, ready to scan the next one from its first byte.
  void reset();

  /// Changes the cap on the whole TLV (checked as bytes are scanned).
  void set_max_length(std::size_t max_length) { max_length_ = max_length; }

  /// Scans a TLV given as all its bytes seen so far: the same bytes as the
  /// previous call plus any new ones (precondition: at least consumed() long).
  /// Only bytes past consumed() are looked at.
  Result scan(std::string_view from_start);

  /// Scans `next`, the bytes following the consumed() ones (which need not be
  /// kept). Stops at the TLV's end: bytes of `next` beyond it are not used.
  /// Once complete or failed, further calls return the same result.
  Result advance(std::string_view next);

  /// Bytes of the TLV consumed so far (its length once complete).
  std::size_t consumed() const { return pos_; }

  /// The whole TLV length once its outermost header gives a definite length
  /// (lets a caller reserve exactly, the cap having been checked); else 0.
  std::size_t known_length() const { return known_; }

 private:
  /// Which part of an encoding the next byte belongs to.
  enum class Step : std::uint8_t {
    tag,          ///< first identifier byte
    tag_more,     ///< a high tag number's continuation byte
    length,       ///< first length byte
    length_more,  ///< a long-form length byte
    skip,         ///< definite-length contents, skipped unread
    done,         ///< the TLV is complete
    failed,       ///< the TLV was refused; error_ says why
  };

  /// Result for the current state.
  Result result() const;
  /// Enters the contents of a definite-length element of `length` bytes.
  bool begin_contents(std::uint64_t length);
  /// Moves on after an element ends: to the next header, or done at the top.
  void end_element();
  /// Records a refusal; returns false so callers can `return fail(...)`.
  bool fail(std::error_code error);

  std::size_t max_length_;    ///< cap on the whole TLV
  unsigned max_depth_;        ///< cap on depth_
  std::size_t pos_ = 0;       ///< bytes consumed from the TLV's start
  std::size_t known_ = 0;     ///< outermost definite total, 0 until known
  std::uint64_t value_ = 0;   ///< long-form length being accumulated
  std::size_t skip_ = 0;      ///< contents bytes left to skip
  unsigned depth_ = 0;        ///< open indefinite-length encodings
  unsigned count_ = 0;        ///< tag bytes seen / length bytes still due
  Step step_ = Step::tag;     ///< what the next byte is
  bool constructed_ = false;  ///< current element is constructed (may be indefinite)
  bool eoc_ = false;          ///< current identifier byte was 0x00 (end-of-contents?)
  std::error_code error_;     ///< why the TLV was refused
};

}  // namespace tlsport::protocol
