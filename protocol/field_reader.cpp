// FieldReader: typed, capped fields of a decoded object.
#include "protocol/field_reader.hpp"

#include <cstring>

namespace tlsport::protocol {

using nlohmann::json;

FieldReader::FieldReader(const json& object, std::string where, std::string prefix)
    : object_(object), where_(std::move(where)), prefix_(std::move(prefix)) {}

const json* FieldReader::value(const char* name) {
  known_.push_back(name);
  if (error_ || !object_.is_object()) return nullptr;
  auto it = object_.find(name);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<std::string> FieldReader::string(const char* name) {
  const json* v = value(name);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_binary()) return std::string(v->get_binary().begin(), v->get_binary().end());
  fail(name, "must be a string");
  return std::nullopt;
}

std::optional<long long> FieldReader::integer(const char* name, long long lo, long long hi) {
  const json* v = value(name);
  if (v == nullptr) return std::nullopt;
  // An unsigned value beyond the signed range is out of every range here.
  bool in_range =
      v->is_number_integer() &&
      !(v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(hi)) &&
      v->get<long long>() >= lo && v->get<long long>() <= hi;
  if (!in_range) {
    fail(name, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return std::nullopt;
  }
  return v->get<long long>();
}

std::optional<bool> FieldReader::boolean(const char* name) {
  const json* v = value(name);
  if (v == nullptr) return std::nullopt;
  if (v->is_boolean()) return v->get<bool>();
  fail(name, "must be true or false");
  return std::nullopt;
}

std::optional<std::vector<std::string>> FieldReader::strings(const char* name,
                                                             std::size_t max_items,
                                                             std::size_t max_length) {
  const json* v = value(name);
  if (v == nullptr) return std::nullopt;
  std::string what = "must be a list of at most " + std::to_string(max_items) +
                     " non-empty strings of at most " + std::to_string(max_length) + " bytes";
  if (!v->is_array() || v->size() > max_items) {
    fail(name, what);
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const json& item : *v) {
    if (!item.is_string() || item.get_ref<const std::string&>().empty() ||
        item.get_ref<const std::string&>().size() > max_length) {
      fail(name, what);
      return std::nullopt;
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

void FieldReader::fail(const char* name, const std::string& what) {
  fail(full_name(name) + " " + what);
}

void FieldReader::fail(std::string message) {
  fail(wire_error(ErrorKind::bad_request, std::move(message)));
}

void FieldReader::fail(WireError error) {
  if (!error_) error_ = std::move(error);
}

std::optional<WireError> FieldReader::finish() {
  if (error_) return error_;
  if (!object_.is_object())
    return wire_error(ErrorKind::bad_request, where_ + " must be an object");
  for (const auto& [key, item] : object_.items()) {
    bool known = false;
    for (const char* name : known_) known = known || key == name;
    if (known) continue;
    std::string list;
    for (const char* name : known_) {
      if (std::strcmp(name, "op") == 0 || std::strcmp(name, "ref") == 0) continue;
      list += list.empty() ? name : std::string(", ") + name;
    }
    // A hostile key may be long: the message quotes its start.
    std::string shown = key.size() > 64 ? key.substr(0, 64) + "..." : key;
    return wire_error(ErrorKind::bad_request, "unknown field \"" + shown + "\" in " + where_ +
                                                  " (known: " + (list.empty() ? "none" : list) +
                                                  ")");
  }
  return std::nullopt;
}

}  // namespace tlsport::protocol
