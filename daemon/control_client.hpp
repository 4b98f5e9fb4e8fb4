// One control channel: a controlling program talking to the daemon over
// stdio, fds 3/4 or a Unix-socket connection.
#pragma once

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "protocol/control_codec.hpp"

namespace tlsport::daemon {

struct Shared;
class ControlClient;

/// What a control client hands to the daemon.
class ClientHost {
 public:
  virtual ~ClientHost() = default;
  /// Carries out one decoded command.
  virtual void on_command(ControlClient& client, const nlohmann::json& message) = 0;
  /// Queues a DATA frame's bytes for a socket (deliver without a reply).
  virtual void on_data(ControlClient& client, std::uint32_t socket_id, std::string_view data) = 0;
  /// The client is gone: close what it owns.
  virtual void on_client_closed(std::uint32_t number) = 0;
  /// The port channel (stdio) ended: the daemon ends too.
  virtual void on_port_closed() = 0;
};

/// A controlling client. Reads commands, writes replies and events through
/// one bounded output buffer that is flushed in batches.
class ControlClient : public std::enable_shared_from_this<ControlClient> {
 public:
  /// in_fd/out_fd are owned from now on (they may be the same descriptor).
  /// `encoding` nullopt: detect lines/binary from the first byte (Unix socket).
  ControlClient(Shared& shared, ClientHost& host, std::uint32_t number, int in_fd, int out_fd,
                bool is_port, std::optional<protocol::ControlEncoding> encoding,
                unsigned header_bytes);
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  /// Starts reading commands.
  void start();
  /// Queues a reply or event (protocol/messages.hpp builds them).
  void send(const nlohmann::json& message);
  /// True when `message` fits one frame of this channel (--packet 1 holds 255 bytes).
  bool fits(const nlohmann::json& message) const;
  /// Queues fromsocket events for `data`; raw data too big for one frame is
  /// split when `splittable`. False when it cannot be sent (too big).
  bool send_data(std::uint32_t socket_id, std::string_view data, bool splittable);
  /// True while the output buffer is above its high-water mark.
  bool congested() const { return pending_output() >= high_water_; }
  /// Remembers a socket that stopped reading because this client is congested.
  void add_waiting_socket(std::uint32_t id) { waiting_sockets_.push_back(id); }
  /// Stops decoding commands until resume_input() (a socket's send buffer is full).
  void pause_input() { pause(kPausedBySocket); }
  /// Goes on decoding commands, unless its output still holds it back.
  void resume_input() { resume(kPausedBySocket); }
  /// Writes what is queued, then closes the channel.
  void close_after_flush();
  /// Writes what it can of the queued output now, without waiting.
  void flush_pending() { flush(); }
  /// Closes the channel now.
  void close_now();

  std::uint32_t number() const { return number_; }
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  /// How long its sockets outlive it, for a successor of the same name.
  std::chrono::milliseconds grace() const { return grace_; }
  void set_grace(std::chrono::milliseconds grace) { grace_ = grace; }
  bool closed() const { return closed_; }
  std::size_t pending_output() const { return out_.size() - out_start_; }

 private:
  /// Why commands are not being decoded (bits).
  enum PauseReason : std::uint8_t {
    kPausedBySocket = 1,  ///< a socket's send buffer is far over its mark
    kPausedByOutput = 2,  ///< our own output is over its hard cap (we do not read replies)
  };
  void pause(PauseReason reason);
  void resume(PauseReason reason);
  bool input_paused() const { return paused_ != 0; }
  /// True when decoding should stop after the current message.
  bool stop_decoding() const { return input_paused() || closed_ || closing_; }

  void wait_readable();
  void on_readable();
  void process(std::string_view bytes);
  void schedule_flush();
  void flush();
  void on_input_end(const char* why);
  void after_drain();
  void watch_for_hangup();

  Shared& shared_;                         ///< the loop and settings
  ClientHost& host_;                       ///< carries out commands
  std::uint32_t number_;                   ///< this client's number
  std::string name_;                       ///< name given in hello, if any
  std::chrono::milliseconds grace_{0};     ///< hello's grace_ms (0: sockets close with it)
  bool is_port_;                           ///< stdio/fds channel: its end ends the daemon
  asio::posix::stream_descriptor in_;      ///< commands come from here
  asio::posix::stream_descriptor out_fd_;  ///< replies and events go here
  std::optional<protocol::ControlDecoder> decoder_;  ///< set once the encoding is known
  protocol::ControlEncoder encoder_;                 ///< replies and events
  std::string out_;                                  ///< queued output
  std::size_t out_start_ = 0;                        ///< first unwritten byte of out_
  std::size_t high_water_;                           ///< congestion threshold for out_
  std::size_t hard_cap_;                             ///< above it, commands are not read
  std::vector<std::uint32_t> waiting_sockets_;       ///< sockets paused until out_ drains
  asio::steady_timer hangup_timer_;                  ///< polls a half-closed client for its hang-up
  bool flush_scheduled_ = false;                     ///< a flush is posted
  bool write_waiting_ = false;                       ///< waiting for the output to be writable
  std::uint8_t paused_ = 0;                          ///< PauseReason bits
  bool input_ended_ = false;                         ///< no more commands will come
  bool closing_ = false;                             ///< close once the output is flushed
  bool closed_ = false;                              ///< descriptors closed
  bool term_format_fixed_ = false;                   ///< the term format was taken from the client
};

}  // namespace tlsport::daemon
