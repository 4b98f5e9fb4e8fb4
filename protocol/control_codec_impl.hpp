// Template members of ControlDecoder (included by control_codec.hpp). The
// callbacks are inlined here; everything that does not depend on them lives in
// control_codec.cpp (ControlDecoder::decode).
#pragma once

namespace tlsport::protocol {

template <class OnMessage, class OnBad>
std::error_code ControlDecoder::feed(std::string_view in, OnMessage&& on_message, OnBad&& on_bad) {
  if (dead_) return make_error_code(ControlError::frame_too_large);
  const std::error_code framing_error =
      deframer_.feed(in, [&](std::string_view body) { return handle(body, on_message, on_bad); });
  if (!framing_error) return {};
  // The only deframer error packet:N and line framing can give is an over-cap
  // header or line; either way the stream cannot be resynchronised.
  dead_ = true;
  return make_error_code(ControlError::frame_too_large);
}

template <class OnMessage, class OnBad>
bool ControlDecoder::handle(std::string_view body, OnMessage& on_message, OnBad& on_bad) {
  InboundMessage message;
  ControlError error{};
  std::string detail;
  switch (decode(body, message, error, detail)) {
    case Decoded::message: {
      bool go_on = static_cast<bool>(on_message(message));
      // A large segmented frame does not keep its buffer for good.
      if (joined_.capacity() > kKeptJoinedCapacity) std::string().swap(joined_);
      return go_on;
    }
    case Decoded::bad:
      on_bad(error, static_cast<const std::string&>(detail));
      return true;
    case Decoded::skip:
      break;
  }
  return true;
}

}  // namespace tlsport::protocol
