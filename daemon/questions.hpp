// Questions the daemon asks a client and waits for: a key's passphrase, a
// verdict on a peer's chain. Each has a number, a timeout, and one answer.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "protocol/commands.hpp"

namespace tlsport::daemon {

class Registry;

/// Outstanding questions, by request number; bounded.
class Questions {
 public:
  /// Called once: with the answer, or null when it timed out or the client left.
  using OnAnswer = std::function<void(const protocol::AnswerCommand* answer)>;

  Questions(asio::io_context& io, Registry& registry) : io_(io), registry_(registry) {}
  Questions(const Questions&) = delete;
  Questions& operator=(const Questions&) = delete;

  /// Sends `event` (given its "request") to `client` and waits up to
  /// `timeout`. False, without asking, when too many questions are open.
  bool ask(std::uint32_t client, nlohmann::json event, std::chrono::milliseconds timeout,
           OnAnswer on_answer);
  /// A client's answer; false when it asked nothing of that number (or
  /// asked another client).
  bool answer(std::uint32_t client, const protocol::AnswerCommand& answer);
  /// A client left: its questions end unanswered.
  void drop_client(std::uint32_t client);
  std::size_t open_count() const { return open_.size(); }

  /// Most questions open at once.
  static constexpr std::size_t kMaxOpen = 4096;

 private:
  struct Open {
    std::uint32_t client;                       ///< who was asked
    std::shared_ptr<asio::steady_timer> timer;  ///< its timeout
    OnAnswer on_answer;                         ///< what the answer does
  };
  /// Takes question `request` out and runs it with `answer`.
  void settle(std::uint64_t request, const protocol::AnswerCommand* answer);

  asio::io_context& io_;                ///< for timers
  Registry& registry_;                  ///< to find the client
  std::map<std::uint64_t, Open> open_;  ///< by request number
  std::uint64_t next_request_ = 1;      ///< never reused
};

}  // namespace tlsport::daemon
