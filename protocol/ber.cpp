// Incremental BER TLV scanner: see ber.hpp.
#include "protocol/ber.hpp"

#include <algorithm>

#include "protocol/framing.hpp"

namespace tlsport::protocol {

BerScanner::BerScanner(std::size_t max_length, unsigned max_depth)
    : max_length_(max_length), max_depth_(max_depth) {}

void BerScanner::reset() {
  const std::size_t max_length = max_length_;
  const unsigned max_depth = max_depth_;
  *this = BerScanner(max_length, max_depth);
}

BerScanner::Result BerScanner::scan(std::string_view from_start) {
  // A shorter view breaks the precondition; answering from the state we have
  // beats throwing from substr on the data path.
  if (from_start.size() < pos_) return result();
  return advance(from_start.substr(pos_));
}

BerScanner::Result BerScanner::result() const {
  Result r;
  if (step_ == Step::done) {
    r.status = Status::complete;
    r.length = pos_;
  } else if (step_ == Step::failed) {
    r.status = Status::error;
    r.error = error_;
  }
  return r;
}

bool BerScanner::fail(std::error_code error) {
  error_ = error;
  step_ = Step::failed;
  return false;
}

void BerScanner::end_element() { step_ = depth_ == 0 ? Step::done : Step::tag; }

bool BerScanner::begin_contents(std::uint64_t length) {
  // pos_ <= max_length_ holds here (every header byte was checked), so the
  // subtraction cannot wrap; comparing in 64 bits also covers a 32-bit size_t.
  if (length > static_cast<std::uint64_t>(max_length_ - pos_)) {
    return fail(make_error_code(FramingError::packet_too_large));
  }
  const auto n = static_cast<std::size_t>(length);
  if (depth_ == 0) known_ = pos_ + n;  // the outermost TLV: its total is now known
  if (n == 0) {
    end_element();
  } else {
    skip_ = n;
    step_ = Step::skip;
  }
  return true;
}

BerScanner::Result BerScanner::advance(std::string_view next) {
  std::size_t i = 0;
  while (i < next.size() && step_ != Step::done && step_ != Step::failed) {
    if (step_ == Step::skip) {
      // Contents of a definite-length element: jump over as much as we have.
      const std::size_t n = std::min(skip_, next.size() - i);
      i += n;
      pos_ += n;
      skip_ -= n;
      if (skip_ == 0) end_element();
      continue;
    }
    // A header byte. Every one counts towards the cap, so an indefinite TLV
    // that keeps growing is refused as soon as it passes max_length_.
    if (pos_ >= max_length_) {
      fail(make_error_code(FramingError::packet_too_large));
      break;
    }
    const auto b = static_cast<std::uint8_t>(next[i++]);
    ++pos_;
    const auto bad = make_error_code(FramingError::ber_bad_encoding);
    switch (step_) {
      case Step::tag:
        constructed_ = (b & 0x20) != 0;
        eoc_ = b == 0x00;
        if ((b & 0x1F) == 0x1F) {
          count_ = 0;
          step_ = Step::tag_more;
        } else {
          step_ = Step::length;
        }
        break;
      case Step::tag_more:
        // X.690 8.1.2.4.2 c: no leading zero 7-bit group (0x80 first).
        if (count_ == 0 && b == 0x80) {
          fail(bad);
          break;
        }
        ++count_;
        if ((b & 0x80) == 0) {
          step_ = Step::length;
        } else if (count_ == kMaxTagBytes) {
          fail(bad);  // a further continuation byte would exceed the cap
        }
        break;
      case Step::length:
        if (eoc_) {
          // Tag byte 0x00 is reserved for end-of-contents: exactly 00 00, and
          // only where an indefinite-length encoding is open.
          if (b != 0x00 || depth_ == 0) {
            fail(bad);
            break;
          }
          --depth_;
          end_element();
        } else if (b < 0x80) {
          begin_contents(b);
        } else if (b == 0x80) {
          if (!constructed_) {
            fail(bad);  // X.690 8.1.3.2 a: indefinite form only for constructed
          } else if (depth_ == max_depth_) {
            fail(make_error_code(FramingError::ber_too_deep));
          } else {
            ++depth_;
            step_ = Step::tag;
          }
        } else if (b == 0xFF || (b & 0x7F) > kMaxLengthBytes) {
          fail(bad);  // 0xFF is reserved (X.690 8.1.3.5 c); longer than any size
        } else {
          count_ = b & 0x7F;
          value_ = 0;
          step_ = Step::length_more;
        }
        break;
      case Step::length_more:
        value_ = (value_ << 8) | b;
        if (--count_ == 0) begin_contents(value_);
        break;
      case Step::skip:
      case Step::done:
      case Step::failed:
        break;  // not reached: handled above or by the loop condition
    }
  }
  return result();
}

}  // namespace tlsport::protocol
