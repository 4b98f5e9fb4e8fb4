#include "daemon/reactor_reserve.hpp"

#include <asio/ip/udp.hpp>
#include <vector>

namespace tlsport::daemon {

void ReactorReserve::ensure(std::size_t descriptors) {
  if (descriptors + kBatch / 4 <= reserved_) return;
  // Open a batch of sockets at once (each registers one state, allocated
  // back to back), then close them: the states go to asio's free list, and
  // the next connections take them from there.
  std::vector<asio::ip::udp::socket> batch;
  batch.reserve(kBatch);
  std::error_code ec;
  for (std::size_t i = 0; i < kBatch; ++i) {
    batch.emplace_back(io_);
    batch.back().open(asio::ip::udp::v4(), ec);
    if (ec) break;  // out of descriptors: the reserve stays smaller
  }
  reserved_ += batch.size();
}

}  // namespace tlsport::daemon
