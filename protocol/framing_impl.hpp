// Deframer::feed, the template part of framing.hpp. Include framing.hpp, not this.
#pragma once

#include <string_view>
#include <system_error>

#include "protocol/framing.hpp"

namespace tlsport::protocol {

// Two phases. First the packet begun in earlier feeds (and any whole packets
// a stop left behind) is finished in buffer_, copying from `in` only the bytes
// it still lacks. Then packets are cut straight out of `in` as views; only an
// incomplete tail, or the rest after a stop, is copied into buffer_.
// on_packet must not call back into this deframer.
template <class OnPacket>
std::error_code Deframer::feed(std::string_view in, OnPacket&& on_packet) {
  if (error_) return error_;
  if (framing_.kind == FramingKind::raw) {
    // Each chunk is a whole packet, so a stop leaves nothing behind.
    if (!in.empty()) static_cast<void>(on_packet(in));
    return {};
  }

  while (buffered() != 0) {
    const std::string_view held(buffer_.data() + start_, buffered());
    const Probe p = probe(held, in);
    if (p.error) return fail(p.error);
    if (p.total == 0) {  // still incomplete: all of `in` belongs to it
      hold(in, p.expect);
      return {};
    }
    if (p.total > held.size()) {  // completed by the head of `in`
      const std::size_t need = p.total - held.size();
      complete_held(in.substr(0, need), p.total);
      in.remove_prefix(need);
    }
    const std::string_view packet(buffer_.data() + start_ + p.header, p.total - p.header);
    start_ += p.total;
    next_packet();
    const bool go = on_packet(packet);
    release_if_empty();  // only now: `packet` pointed into buffer_
    if (!go) {
      hold(in, 0);
      return {};
    }
  }

  while (!in.empty()) {
    const Probe p = probe(in, {});
    if (p.error) return fail(p.error);
    if (p.total == 0) {
      hold(in, p.expect);
      return {};
    }
    const std::string_view packet = in.substr(p.header, p.total - p.header);
    in.remove_prefix(p.total);
    next_packet();
    if (!on_packet(packet)) {
      hold(in, 0);
      return {};
    }
  }
  return {};
}

}  // namespace tlsport::protocol
