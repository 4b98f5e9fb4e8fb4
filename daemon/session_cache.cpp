#include "daemon/session_cache.hpp"

#include <ctime>

namespace tlsport::daemon {

void SessionCache::erase(std::unordered_map<std::string, Entry>::iterator it) {
  SSL_SESSION_free(it->second.session);
  order_.erase(it->second.used);
  entries_.erase(it);
}

void SessionCache::store(const std::string& key, SSL_SESSION* session) {
  if (auto it = entries_.find(key); it != entries_.end()) erase(it);
  while (!entries_.empty() && entries_.size() >= capacity_) erase(entries_.find(order_.back()));
  order_.push_front(key);
  entries_.emplace(key, Entry{session, order_.begin()});
}

SSL_SESSION* SessionCache::find(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  SSL_SESSION* session = it->second.session;
  long age = static_cast<long>(std::time(nullptr)) - SSL_SESSION_get_time(session);
  if (!SSL_SESSION_is_resumable(session) || age > SSL_SESSION_get_timeout(session)) {
    erase(it);
    return nullptr;
  }
  order_.splice(order_.begin(), order_, it->second.used);
  return session;
}

void SessionCache::clear() {
  for (auto& [key, entry] : entries_) SSL_SESSION_free(entry.session);
  entries_.clear();
  order_.clear();
}

}  // namespace tlsport::daemon
