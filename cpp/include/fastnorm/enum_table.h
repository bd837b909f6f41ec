// Enums that Python names, each declared once as a table (an X-macro: FASTNORM_<ENUM>(X) calls X(name, ...) once
// per value, in order).  From the table come the enum's values, the names Python passes and sees, and the lookup
// of a name, so that adding a value is one line of its table and the struct or branch behind it.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

// X-macro helpers: an enum value, its name as a string literal.
#define FASTNORM_ENUM_VALUE(name, ...) name,
#define FASTNORM_ENUM_NAME(name, ...) #name,

namespace fastnorm {

// The value of E whose name is `name` (names in the enum's order), or std::invalid_argument naming `what` and the
// names it takes.
template <class E>
E enum_from_name(const std::vector<const char*>& names, const std::string& name, const char* what) {
  for (size_t i = 0; i < names.size(); ++i)
    if (name == names[i]) return static_cast<E>(i);
  std::string known;
  for (const char* n : names) known += std::string(known.empty() ? "" : ", ") + "'" + n + "'";
  throw std::invalid_argument(std::string(what) + ": unknown value '" + name + "' (expected one of " + known + ")");
}

}  // namespace fastnorm
