#include "daemon/questions.hpp"

#include "daemon/control_client.hpp"
#include "daemon/registry.hpp"

namespace tlsport::daemon {

bool Questions::ask(std::uint32_t client, nlohmann::json event, std::chrono::milliseconds timeout,
                    OnAnswer on_answer) {
  ControlClient* asked = registry_.client(client);
  if (asked == nullptr || open_.size() >= kMaxOpen) return false;
  std::uint64_t request = next_request_++;
  auto timer = std::make_shared<asio::steady_timer>(io_, timeout);
  timer->async_wait([this, request](const std::error_code& ec) {
    if (!ec) settle(request, nullptr);
  });
  open_.emplace(request, Open{client, timer, std::move(on_answer)});
  event["request"] = request;
  asked->send(event);
  return true;
}

bool Questions::answer(std::uint32_t client, const protocol::AnswerCommand& answer) {
  auto it = open_.find(answer.request);
  if (it == open_.end() || it->second.client != client) return false;
  settle(answer.request, &answer);
  return true;
}

void Questions::drop_client(std::uint32_t client) {
  std::vector<std::uint64_t> gone;
  for (const auto& [request, open] : open_)
    if (open.client == client) gone.push_back(request);
  for (std::uint64_t request : gone) settle(request, nullptr);
}

void Questions::settle(std::uint64_t request, const protocol::AnswerCommand* answer) {
  auto it = open_.find(request);
  if (it == open_.end()) return;
  Open open = std::move(it->second);
  open_.erase(it);
  open.timer->cancel();
  open.on_answer(answer);
}

}  // namespace tlsport::daemon
