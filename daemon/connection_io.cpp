// Connection: reading into packets for the owner, writing delivered data,
// and the flow control between them (active modes, recv, busy/ready).
#include <asio/post.hpp>
#include <climits>

#include "daemon/connection.hpp"
#include "daemon/control_client.hpp"
#include "daemon/shared.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {
/// Most rounds of reading one connection does before letting others run.
constexpr int kReadRounds = 4;
/// Past this many times the socket buffer's mark, a client's input is paused.
constexpr std::size_t kHardLimitFactor = 4;
/// Past the peer-memory budget, a socket holding more than budget / this
/// many bytes stops reading until the total falls (docs/design.md).
constexpr std::size_t kBudgetShares = 16;
/// What stoptls may hold of a passive socket's data before the peer's
/// close_notify (a peer should stop sending; one that does not is cut off).
constexpr std::size_t kMaxHeldWhileStopping = 1u << 20;
/// A send buffer that grew past this gives its memory back once empty.
constexpr std::size_t kKeepWriteCapacity = 64u << 10;

ErrorInfo framing_error(const std::error_code& ec) {
  if (ec == protocol::FramingError::packet_too_large)
    return wire_error(std::errc::message_size, ec.message());
  return wire_error(ErrorKind::bad_packet, ec.message());
}
}  // namespace

// ---------------------------------------------------------------- reading

bool Connection::can_read() const {
  if (state_ != State::open || id_ == 0 || owner_ == 0 || budget_paused_ || judging_) return false;
  // stoptls must find the peer's close_notify, whatever the active mode.
  return stopping_tls() || (!owner_paused_ && (active_ != 0 || recv_client_ != 0));
}

void Connection::post_read() {
  // Posted: this may run while a client's command is being carried out, and
  // reading must not happen in the middle of that.
  asio::post(shared_.io, [self = shared_from_this()] { self->read_some(); });
}

void Connection::read_some() {
  if (!can_read()) return;
  auto self = shared_from_this();
  // Packets held back by an earlier stop go first.
  if (deframer_.has_packet() && !feed(std::string_view())) return;
  if (peer_eof_) {
    if (!deframer_.has_packet()) peer_closed();
    return;
  }
  auto& buffer = shared_.read_buffer;
  for (int round = 0; round < kReadRounds; ++round) {
    if (!can_read()) return;
    if (over_budget()) {
      // The largest holders wait; smaller ones go on and may complete
      // packets. Reading resumes when the total falls below 3/4 of the budget.
      budget_paused_ = true;
      shared_.budget_waiters.push_back(weak_from_this());
      return;
    }
    std::size_t got = 0;
    ErrorInfo error;
    Io io = transport_.read(buffer.data(), buffer.size(), got, error);
    if (got > 0) {
      touch();
      bytes_in_ += got;
      shared_.counters.bytes_in += got;
    }
    if (got > 0 && !feed(std::string_view(buffer.data(), got))) {
      if (io == Io::eof && !stopping_tls()) peer_eof_ = true;
      return;
    }
    if (stopping_tls() && deframer_.buffered() > kMaxHeldWhileStopping) {
      fail(wire_error(ErrorKind::closed, "the peer kept sending instead of answering stoptls"));
      return;
    }
    switch (io) {
      case Io::want_read:
      case Io::want_write:
      case Io::want_verdict:
        await_inbound(io == Io::want_write ? Io::want_write : Io::want_read);
        return;
      case Io::eof:
        if (stopping_tls()) {
          finish_stop_tls();
          return;
        }
        peer_eof_ = true;
        peer_closed();
        return;
      case Io::failed:
        fail(error);
        return;
      case Io::done:
        break;
    }
  }
  post_read();  // let other connections have their turn
}

void Connection::account_held() {
  std::size_t held = deframer_.buffered();
  shared_.held_by_peers = shared_.held_by_peers - held_counted_ + held;
  bool fell = held < held_counted_;
  held_counted_ = static_cast<std::uint32_t>(std::min<std::size_t>(held, UINT32_MAX));
  std::size_t budget = shared_.options.peer_memory_budget;
  if (!fell || shared_.budget_waiters.empty() || shared_.held_by_peers > budget / 4 * 3) return;
  auto waiters = std::move(shared_.budget_waiters);
  shared_.budget_waiters.clear();
  for (auto& weak : waiters) {
    if (auto conn = weak.lock()) {
      conn->budget_paused_ = false;
      conn->post_read();
    }
  }
}

bool Connection::over_budget() const {
  std::size_t budget = shared_.options.peer_memory_budget;
  return shared_.held_by_peers >= budget && held_counted_ >= budget / kBudgetShares;
}

bool Connection::feed(std::string_view bytes) {
  auto self = shared_from_this();
  std::error_code ec =
      deframer_.feed(bytes, [this](std::string_view packet) { return emit(packet); });
  account_held();
  if (ec) {
    fail(framing_error(ec));
    return false;
  }
  if (pending_failure_) {
    ErrorInfo error = std::move(*pending_failure_);
    pending_failure_.reset();
    fail(error);
    return false;
  }
  return can_read();
}

bool Connection::emit(std::string_view packet) {
  if (state_ != State::open) return false;
  // Only stoptls reads a passive socket: what it finds waits for a recv.
  if (recv_client_ == 0 && active_ == 0) return false;
  ++shared_.counters.packets_in;
  if (recv_client_ != 0) {
    // A passive read: the packet is the reply.
    std::uint32_t client = recv_client_;
    recv_client_ = 0;
    timer_.reset();  // cancels the recv timeout: a passive socket between recvs keeps no timer
    if (ControlClient* c = shared_.registry.client(client))
      c->send(protocol::ok_reply(
          recv_ref_,
          {{"data", json::binary(std::vector<std::uint8_t>(packet.begin(), packet.end()))}}));
    recv_ref_ = nullptr;
    return can_read();
  }
  ControlClient* owner = shared_.registry.client(owner_);
  if (owner == nullptr) return false;
  if (!owner->send_data(id_, packet, framing().kind == protocol::FramingKind::raw)) {
    pending_failure_ = std::make_unique<ErrorInfo>(wire_error(
        std::errc::message_size,
        "a packet of " + std::to_string(packet.size()) + " bytes does not fit a control frame"));
    return false;
  }
  if (active_ > 0 && --active_ == 0) {
    if (!active_once_) owner->send(protocol::passive_event(id_));
    return false;
  }
  if (owner->congested()) {
    owner_paused_ = true;
    owner->add_waiting_socket(id_);
    return false;
  }
  return true;
}

void Connection::hold_for_verdict(bool hold) {
  judging_ = hold;
  if (!hold) post_read();
}

void Connection::resume_reading() {
  if (!owner_paused_) return;
  owner_paused_ = false;
  ControlClient* owner = shared_.registry.client(owner_);
  if (owner != nullptr && owner->congested()) {
    owner_paused_ = true;
    owner->add_waiting_socket(id_);
    return;
  }
  read_some();
}

void Connection::set_active(ActiveMode mode) {
  if (mode.count <= 0) {
    active_ = mode.count < 0 ? -1 : 0;
    active_once_ = false;
  } else if (mode.once) {
    active_ = 1;
    active_once_ = true;
  } else {
    // Adds to the count, as inet:setopts does.
    long long base = active_ > 0 && !active_once_ ? active_ : 0;
    active_ = std::min<long long>(base + mode.count, INT_MAX);
    active_once_ = false;
  }
  post_read();
}

std::optional<ErrorInfo> Connection::recv(std::uint32_t client, json ref,
                                          std::chrono::milliseconds timeout) {
  if (active_ != 0) return wire_error(ErrorKind::bad_request, "recv needs active false");
  if (recv_client_ != 0)
    return wire_error(std::errc::connection_already_in_progress, "a recv is already waiting");
  recv_client_ = client;
  recv_ref_ = std::move(ref);
  timer().expires_after(timeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    // A timer that fired just as a packet answered the recv may still run:
    // it counts only if this recv's own deadline has passed.
    if (ec || !self->timer_ || self->timer_->expiry() > std::chrono::steady_clock::now()) return;
    self->fail_recv(wire_error(ErrorKind::timeout, "recv timed out"));
  });
  post_read();
  return std::nullopt;
}

void Connection::fail_recv(const ErrorInfo& error) {
  if (recv_client_ == 0) return;
  if (ControlClient* c = shared_.registry.client(recv_client_))
    c->send(protocol::error_reply(recv_ref_, error));
  recv_client_ = 0;
  recv_ref_ = nullptr;
}

void Connection::set_owner(std::uint32_t owner) {
  owner_ = owner;
  fail_recv(wire_error(ErrorKind::cancelled, "socket handed over"));
  // The old owner's waiting list may still name us; resuming twice is harmless.
  owner_paused_ = false;
  post_read();
}

void Connection::orphan() {
  owner_ = 0;
  recv_client_ = 0;
  recv_ref_ = nullptr;
  owner_paused_ = false;
  blocked_client_ = 0;
}

// ---------------------------------------------------------------- writing

std::optional<ErrorInfo> Connection::deliver(std::string_view data, bool& over) {
  over = false;
  if (tls_change_ || judging_ || (state_ == State::handshaking && id_ != 0))
    return wire_error(ErrorKind::bad_request,
                      "TLS is being started or stopped on this socket: deliver after the reply");
  if (state_ != State::open) return wire_error(ErrorKind::closed, "socket is closed");
  std::uint8_t header[4];
  auto header_size = protocol::encode_header(framing(), data.size(), header);
  if (!header_size)
    return wire_error(std::errc::message_size,
                      std::to_string(data.size()) + " bytes do not fit a " +
                          std::to_string(framing().header_bytes) + "-byte header");
  wbuf_.append(reinterpret_cast<const char*>(header), *header_size);
  wbuf_.append(data);
  ++shared_.counters.packets_out;
  schedule_write();
  std::size_t pending = wbuf_.size() - wstart_;
  std::size_t mark = shared_.options.socket_buffer;
  if (pending >= mark && !busy_) {
    // Tell the owner to hold further data for this socket (a port's "busy").
    busy_ = true;
    if (ControlClient* owner = shared_.registry.client(owner_))
      owner->send(protocol::busy_event(id_));
  }
  // A client that does not honour busy is stopped altogether, so that memory
  // stays bounded whatever it does.
  over = pending >= kHardLimitFactor * mark;
  return std::nullopt;
}

void Connection::schedule_write() {
  if (write_posted_ || outbound_wait_ != Io::done) return;
  write_posted_ = true;
  // Posted, so that several delivers in one turn of the loop become one write.
  asio::post(shared_.io, [self = shared_from_this()] {
    self->write_posted_ = false;
    if (self->outbound_wait_ == Io::done) self->write_some();
  });
}

void Connection::write_some() {
  if (state_ == State::closed) return;
  // A handshake writes nothing of ours, except the plaintext before a starttls.
  if (state_ == State::handshaking && !starting_tls()) return;
  if (wstart_ < wbuf_.size()) {
    std::size_t written = 0;
    ErrorInfo error;
    Io io = transport_.write(wbuf_.data() + wstart_, wbuf_.size() - wstart_, written, error);
    wstart_ += written;
    if (written > 0) {
      touch();
      bytes_out_ += written;
      shared_.counters.bytes_out += written;
    }
    if (io == Io::failed) {
      fail(error);
      return;
    }
    if (io != Io::done) await_outbound(io);
  }
  after_write(wbuf_.size() - wstart_);
}

void Connection::after_write(std::size_t pending) {
  if (pending == 0) {
    wbuf_.clear();
    wstart_ = 0;
    if (wbuf_.capacity() > kKeepWriteCapacity) wbuf_.shrink_to_fit();
  } else if (wstart_ >= kKeepWriteCapacity && wstart_ * 2 >= wbuf_.size()) {
    wbuf_.erase(0, wstart_);
    wstart_ = 0;
  }
  std::size_t low = shared_.options.socket_buffer / 4;
  if (busy_ && pending <= low) {
    busy_ = false;
    if (state_ == State::open) {
      if (ControlClient* owner = shared_.registry.client(owner_))
        owner->send(protocol::ready_event(id_));
    }
  }
  if (blocked_client_ != 0 && pending <= low) {
    std::uint32_t client = blocked_client_;
    blocked_client_ = 0;
    if (ControlClient* c = shared_.registry.client(client)) c->resume_input();
  }
  if (pending == 0 && state_ == State::closing) continue_close();
  if (pending == 0 && starting_tls()) begin_upgrade();
  if (pending == 0 && stopping_tls() && !tls_change_->notify_sent) send_stop_notify();
}

}  // namespace tlsport::daemon
