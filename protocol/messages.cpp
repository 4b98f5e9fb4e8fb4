// Replies and events of docs/protocol.md §2.
#include "protocol/messages.hpp"

namespace tlsport::protocol {

using nlohmann::json;

json ok_reply(const json& ref, json body) {
  body["ok"] = true;
  if (!ref.is_null()) body["ref"] = ref;
  return body;
}

json error_reply(const json& ref, const WireError& error) {
  json body = {{"ok", false}, {"error", error.to_json()}};
  if (!ref.is_null()) body["ref"] = ref;
  return body;
}

json deliver_error_reply(std::uint32_t id, const json& ref, const WireError& error) {
  json body = error_reply(ref, error);
  body["id"] = id;
  return body;
}

json socket_closed_event(std::uint32_t id, const WireError* error) {
  return {{"event", "socket_closed"},
          {"id", id},
          {"reason", error == nullptr ? json("normal") : error->to_json()}};
}

json passive_event(std::uint32_t id) { return {{"event", "passive"}, {"id", id}}; }
json busy_event(std::uint32_t id) { return {{"event", "busy"}, {"id", id}}; }
json ready_event(std::uint32_t id) { return {{"event", "ready"}, {"id", id}}; }

json owned_event(const OwnedFacts& facts) {
  json event = {{"event", "owned"}, {"id", facts.id}, {"from", facts.from}};
  if (!facts.from_name.empty()) event["from_name"] = facts.from_name;
  if (facts.listener) {
    event["listener"] = true;
    event["sockname"] = facts.endpoint;
    return event;
  }
  event["mode"] = facts.mode;
  if (facts.busy) event["busy"] = true;
  event["peer"] = facts.endpoint;
  return event;
}

}  // namespace tlsport::protocol
