#include "daemon/poller.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace tlsport::daemon {
namespace {

int make_epoll() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "epoll_create1");
  return fd;
}

}  // namespace

Poller::Poller(asio::io_context& io) : epoll_(io, make_epoll()) { wait(); }

std::error_code Poller::add(int fd, ReadinessWatcher& watcher) {
  if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
  auto index = static_cast<std::size_t>(fd);
  if (index >= entries_.size()) entries_.resize(index + 1 + index / 2);
  std::uint32_t serial = ++next_serial_;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (std::uint64_t{serial} << 32) | static_cast<std::uint32_t>(fd);
  if (::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return {errno, std::system_category()};
  entries_[index] = Entry{&watcher, serial};
  return {};
}

void Poller::remove(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= entries_.size()) return;
  if (!entries_[static_cast<std::size_t>(fd)].watcher) return;
  entries_[static_cast<std::size_t>(fd)] = Entry{};
  epoll_event ev{};
  ::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_DEL, fd, &ev);
}

void Poller::wait() {
  epoll_.async_wait(asio::posix::stream_descriptor::wait_read, [this](const std::error_code& ec) {
    if (ec) return;  // the loop is stopping
    dispatch();
    wait();
  });
}

void Poller::dispatch() {
  epoll_event events[kBatch];
  int n = ::epoll_wait(epoll_.native_handle(), events, kBatch, 0);
  for (int i = 0; i < n; ++i) {
    auto fd = static_cast<std::size_t>(events[i].data.u64 & 0xffffffffu);
    auto serial = static_cast<std::uint32_t>(events[i].data.u64 >> 32);
    // Looked up per event: an earlier watcher of this batch may have ended
    // this one (or its descriptor may already serve another socket).
    if (fd >= entries_.size() || entries_[fd].serial != serial || !entries_[fd].watcher) continue;
    std::uint32_t e = events[i].events;
    bool trouble = (e & (EPOLLERR | EPOLLHUP)) != 0;
    bool hangup = trouble || (e & EPOLLRDHUP) != 0;
    entries_[fd].watcher->on_readiness(hangup || (e & EPOLLIN) != 0, trouble || (e & EPOLLOUT) != 0,
                                       hangup);
  }
}

}  // namespace tlsport::daemon
