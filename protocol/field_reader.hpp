// Reads the fields of one decoded object (a command, a `tls` object) into
// typed values, keeping the first error and naming the field it concerns.
// Every field the caller asks for is known; once all are read, finish()
// reports a field nobody asked for: unknown fields are an error.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/wire_error.hpp"

namespace tlsport::protocol {

/// A sticky-error reader: after the first error every accessor returns
/// nothing, so a parser reads all its fields and checks once at the end.
class FieldReader {
 public:
  /// `object` must outlive the reader; `where` names it in messages ("listen",
  /// "tls"); `prefix` goes before field names in messages ("tls.").
  FieldReader(const nlohmann::json& object, std::string where, std::string prefix = "");

  /// The field's value, or null when it is absent or null (null means absent).
  const nlohmann::json* value(const char* name);
  /// A string field.
  std::optional<std::string> string(const char* name);
  /// An integer field within [lo, hi].
  std::optional<long long> integer(const char* name, long long lo, long long hi);
  /// A boolean field.
  std::optional<bool> boolean(const char* name);
  /// A list of at most `max_items` non-empty strings of at most `max_length` bytes.
  std::optional<std::vector<std::string>> strings(const char* name, std::size_t max_items,
                                                  std::size_t max_length);
  /// Marks a field as known without reading it (read by other means).
  void allow(const char* name) { known_.push_back(name); }

  /// Records an error about field `name` (the first error wins).
  void fail(const char* name, const std::string& what);
  /// Records a bad_request that is not about one field.
  void fail(std::string message);
  /// Records a ready-made error (of another kind).
  void fail(WireError error);
  /// True while no error has been recorded.
  bool ok() const { return !error_; }

  /// The first error, else a field that was never asked for, else nothing.
  std::optional<WireError> finish();

 private:
  /// The full name of a field in messages: "port", "tls.verify".
  std::string full_name(const char* name) const { return prefix_ + name; }

  const nlohmann::json& object_;    ///< the object read
  std::string where_;               ///< its name in messages
  std::string prefix_;              ///< before field names in messages
  std::vector<const char*> known_;  ///< every field asked for
  std::optional<WireError> error_;  ///< the first error
};

}  // namespace tlsport::protocol
