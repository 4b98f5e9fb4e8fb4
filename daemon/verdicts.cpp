#include "daemon/verdicts.hpp"

#include "daemon/shared.hpp"
#include "daemon/tls_callbacks.hpp"
#include "daemon/tls_inspect.hpp"

namespace tlsport::daemon {
namespace {

using nlohmann::json;

/// The event: the peer's chain, leaf first, and OpenSSL's verdict.
json verify_event(SSL* ssl, long code, json about) {
  json event = std::move(about);
  event["event"] = "verify_peer";
  event["peer_chain"] = describe_peer_chain(ssl);
  json verdict = {{"code", code}, {"text", X509_verify_cert_error_string(code)}};
  int depth = failed_verify_depth(ssl);
  if (code != X509_V_OK && depth >= 0) verdict["depth"] = depth;
  event["verify_result"] = verdict;
  return event;
}

}  // namespace

Connection::AskVerdict ask_client_verdict(Shared& shared, std::uint32_t client, json ref,
                                          std::chrono::milliseconds timeout) {
  return [&shared, client, ref, timeout](Connection& connection) {
    const SslNotes* notes = find_ssl_notes(connection.ssl());
    json about = json::object();
    if (!ref.is_null()) about["ref"] = ref;
    json event = verify_event(connection.ssl(), notes ? notes->verify_code : 0, about);
    std::weak_ptr<Connection> weak = connection.shared_from_this();
    bool asked =
        shared.questions.ask(client, event, timeout, [weak](const protocol::AnswerCommand* answer) {
          if (auto conn = weak.lock())
            conn->give_verdict(answer != nullptr && answer->accept == true);
        });
    if (!asked) connection.give_verdict(false);
  };
}

void ask_server_verdict(Shared& shared, std::uint32_t client, json about, Connection& connection,
                        std::chrono::milliseconds timeout, std::function<void(bool)> decide) {
  json event =
      verify_event(connection.ssl(), SSL_get_verify_result(connection.ssl()), std::move(about));
  auto shared_decide = std::make_shared<std::function<void(bool)>>(std::move(decide));
  bool asked = shared.questions.ask(client, event, timeout,
                                    [shared_decide](const protocol::AnswerCommand* answer) {
                                      (*shared_decide)(answer != nullptr && answer->accept == true);
                                    });
  if (!asked) (*shared_decide)(false);
}

bool wants_verdict(const Connection& connection) {
  SSL* ssl = connection.ssl();
  if (ssl == nullptr) return false;
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  return extras != nullptr && extras->verify_callback;
}

}  // namespace tlsport::daemon
