#include "daemon/control_client.hpp"

#include <poll.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <cstring>

#include "daemon/connection.hpp"
#include "daemon/log.hpp"
#include "daemon/shared.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;
using protocol::ControlEncoding;

namespace {
/// A client's output may reach this many times its high-water mark with
/// replies and events before its commands stop being read.
constexpr std::size_t kOutputCapFactor = 2;
}  // namespace

ControlClient::ControlClient(Shared& shared, ClientHost& host, std::uint32_t number, int in_fd,
                             int out_fd, bool is_port, std::optional<ControlEncoding> encoding,
                             unsigned header_bytes)
    : shared_(shared),
      host_(host),
      number_(number),
      is_port_(is_port),
      in_(shared.io, in_fd),
      out_fd_(shared.io, in_fd == out_fd ? ::dup(out_fd) : out_fd),
      encoder_(encoding.value_or(ControlEncoding::binary), header_bytes, shared.options.terms),
      high_water_(shared.options.client_buffer),
      hard_cap_(kOutputCapFactor * shared.options.client_buffer),
      hangup_timer_(shared.io) {
  if (encoding) decoder_.emplace(*encoding, header_bytes, shared.options.max_message);
  std::error_code ignored;
  in_.non_blocking(true, ignored);
  out_fd_.non_blocking(true, ignored);
}

void ControlClient::start() { wait_readable(); }

void ControlClient::wait_readable() {
  if (closed_ || input_ended_ || input_paused() || closing_) return;
  in_.async_wait(asio::posix::stream_descriptor::wait_read,
                 [self = shared_from_this()](const std::error_code& ec) {
                   if (self->closed_ || self->input_ended_) return;
                   if (ec) {
                     if (ec != asio::error::operation_aborted) self->on_input_end("wait failed");
                     return;
                   }
                   self->on_readable();
                 });
}

void ControlClient::on_readable() {
  std::vector<char>& buffer = shared_.control_input;
  ssize_t n = ::read(in_.native_handle(), buffer.data(), buffer.size());
  if (n > 0) {
    process(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    wait_readable();
  } else if (n == 0) {
    on_input_end("end of input");
  } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    wait_readable();
  } else {
    on_input_end(std::strerror(errno));
  }
}

void ControlClient::process(std::string_view bytes) {
  if (closed_ || closing_) return;
  if (!decoder_) {
    if (bytes.empty()) return;
    // Unix-socket clients choose their encoding with their first byte.
    char first = bytes.front();
    bool lines = first == '{' || first == ' ' || first == '\t' || first == '\r' || first == '\n';
    ControlEncoding encoding = lines ? ControlEncoding::lines : ControlEncoding::binary;
    decoder_.emplace(encoding, 4, shared_.options.max_message);
    encoder_ = protocol::ControlEncoder(encoding, 4, shared_.options.terms);
  }
  auto self = shared_from_this();  // a command may close this client
  std::error_code ec = decoder_->feed(
      bytes,
      [&](protocol::InboundMessage& message) {
        if (closed_ || closing_) return false;
        if (message.kind == protocol::InboundMessage::Kind::data) {
          host_.on_data(*this, message.socket_id, message.data);
        } else {
          if (auto format = decoder_->first_term_format();
              format && format != encoder_.term_format() && !term_format_fixed_) {
            encoder_.set_term_format(*format);
          }
          term_format_fixed_ = term_format_fixed_ || decoder_->first_term_format().has_value();
          host_.on_command(*this, message.command);
        }
        // A client that does not read its replies stops being read itself.
        if (pending_output() >= hard_cap_) pause(kPausedByOutput);
        return !stop_decoding();
      },
      [&](protocol::ControlError error, const std::string& detail) {
        if (auto format = decoder_->first_term_format(); format && !term_format_fixed_) {
          encoder_.set_term_format(*format);
          term_format_fixed_ = true;
        }
        std::string message = make_error_code(error).message();
        if (!detail.empty()) message += ": " + detail;
        send(protocol::error_reply(nullptr, wire_error(ErrorKind::bad_request, message)));
      });
  if (ec) {
    log(LogLevel::warning, "client %u: %s; disconnecting it", number_, ec.message().c_str());
    send(protocol::error_reply(nullptr, wire_error(std::errc::message_size, ec.message())));
    close_after_flush();
  }
}

void ControlClient::pause(PauseReason reason) {
  bool was_paused = input_paused();
  paused_ |= reason;
  // Input is not read while paused, so its end would go unseen: watch for it,
  // once the decoding under way (which may be what paused) has kept the input
  // it did not reach. Looking at once saw an empty, closed pipe and dropped
  // the commands still in the buffer just read.
  if (!was_paused)
    asio::post(in_.get_executor(), [self = shared_from_this()] { self->watch_for_hangup(); });
}

void ControlClient::resume(PauseReason reason) {
  if ((paused_ & reason) == 0) return;
  paused_ &= static_cast<std::uint8_t>(~reason);
  if (input_paused()) return;
  asio::post(in_.get_executor(), [self = shared_from_this()] {
    if (self->input_paused() || self->closed_) return;
    self->process(std::string_view());
    self->wait_readable();
  });
}

bool ControlClient::fits(const json& message) const {
  std::string scratch;
  return encoder_.append_message(scratch, message);
}

void ControlClient::send(const json& message) {
  if (closed_) return;
  if (!encoder_.append_message(out_, message)) {
    // Only possible with --packet 1/2: say so in a message that fits.
    json ref = message.contains("ref") ? message["ref"] : json();
    encoder_.append_message(
        out_, protocol::error_reply(
                  ref, wire_error(std::errc::message_size, "reply too large for frame")));
  }
  schedule_flush();
}

bool ControlClient::send_data(std::uint32_t socket_id, std::string_view data, bool splittable) {
  if (closed_) return true;
  std::size_t max = encoder_.max_data_per_frame();
  if (data.size() > max && !splittable) return false;
  do {
    std::string_view piece = data.substr(0, std::min(max, data.size()));
    encoder_.append_data(out_, socket_id, piece);
    data.remove_prefix(piece.size());
  } while (!data.empty());
  schedule_flush();
  return true;
}

void ControlClient::schedule_flush() {
  if (flush_scheduled_ || write_waiting_ || closed_) return;
  flush_scheduled_ = true;
  // Posted, so that everything produced in this turn of the loop leaves in
  // one write.
  asio::post(in_.get_executor(), [self = shared_from_this()] {
    self->flush_scheduled_ = false;
    self->flush();
  });
}

void ControlClient::flush() {
  while (!closed_ && out_start_ < out_.size()) {
    ssize_t n =
        ::write(out_fd_.native_handle(), out_.data() + out_start_, out_.size() - out_start_);
    if (n > 0) {
      out_start_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Reclaim what was written so a slow reader does not make out_ grow.
      if (out_start_ >= (64u << 10) && out_start_ * 2 >= out_.size()) {
        out_.erase(0, out_start_);
        out_start_ = 0;
      }
      after_drain();
      write_waiting_ = true;
      out_fd_.async_wait(asio::posix::stream_descriptor::wait_write,
                         [self = shared_from_this()](const std::error_code& ec) {
                           self->write_waiting_ = false;
                           if (ec || self->closed_) return;
                           self->flush();
                         });
      return;
    }
    // EPIPE or another error: nobody is reading any more.
    log(LogLevel::info, "client %u: output closed (%s)", number_,
        n < 0 ? std::strerror(errno) : "short write");
    out_.clear();
    out_start_ = 0;
    if (is_port_)
      on_input_end("output closed");  // the daemon ends with its port
    else
      close_now();  // even when its input had already ended
    return;
  }
  out_.clear();
  out_start_ = 0;
  if (out_.capacity() > (4u << 20)) out_.shrink_to_fit();
  after_drain();
  if (closing_) close_now();
}

void ControlClient::after_drain() {
  if (pending_output() > high_water_ / 4) return;
  resume(kPausedByOutput);
  if (waiting_sockets_.empty()) return;
  std::vector<std::uint32_t> ids;
  ids.swap(waiting_sockets_);
  for (std::uint32_t id : ids) {
    if (Connection* connection = shared_.registry.connection(id)) connection->resume_reading();
  }
}

void ControlClient::on_input_end(const char* why) {
  if (input_ended_) return;
  input_ended_ = true;
  log(LogLevel::info, "client %u: %s", number_, why);
  if (is_port_) {
    host_.on_port_closed();
    return;
  }
  if (std::strcmp(why, "end of input") != 0) {
    close_after_flush();
    return;
  }
  // A client that only shut down its sending side (socat, `nc -N`) still
  // reads: its pending replies and events go on until it closes entirely.
  watch_for_hangup();
}

void ControlClient::watch_for_hangup() {
  if (closed_ || (!input_ended_ && !input_paused())) return;
  // After the end of input: has the client closed entirely? While paused:
  // has the writer of our input gone (a pipe's writer, a socket closed)?
  int fd = input_ended_ ? out_fd_.native_handle() : in_.native_handle();
  struct pollfd p = {fd, static_cast<short>(input_ended_ ? POLLOUT : POLLIN), 0};
  bool polled = ::poll(&p, 1, 0) >= 0;
  bool hung_up = !polled || (p.revents & (POLLHUP | POLLERR)) != 0;
  // Commands still waiting in a closed pipe, or already read and not yet
  // carried out, are carried out once the output drains; a client held back
  // by a busy socket has no such prospect.
  bool commands_wait = (p.revents & POLLIN) != 0 || (decoder_ && decoder_->buffered() > 0);
  if (hung_up && !input_ended_ && commands_wait && (paused_ & kPausedBySocket) == 0)
    hung_up = false;
  if (hung_up) {
    if (input_ended_)
      close_after_flush();
    else
      on_input_end("hang-up");
    return;
  }
  hangup_timer_.expires_after(std::chrono::milliseconds(100));
  hangup_timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec) self->watch_for_hangup();
  });
}

void ControlClient::close_after_flush() {
  if (closed_) return;
  closing_ = true;
  if (!write_waiting_) flush();  // closes once everything is written
  if (!closed_ && pending_output() == 0) close_now();
}

void ControlClient::close_now() {
  if (closed_) return;
  auto self = shared_from_this();
  closed_ = true;
  if (is_port_) {
    // Without its port channel the daemon has nobody to serve.
    host_.on_port_closed();
  }
  std::error_code ignored;
  hangup_timer_.cancel();
  in_.close(ignored);
  out_fd_.close(ignored);
  host_.on_client_closed(number_);
}

}  // namespace tlsport::daemon
