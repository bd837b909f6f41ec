#include "fastnorm/isa.h"

#include <cstdlib>
#include <stdexcept>

namespace fastnorm {
namespace {

Isa detect_best() {
#if FASTNORM_MULTI_ISA
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::v4;
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::v3;
#endif
  return Isa::baseline;
}

Isa initial_isa() {
  const char* env = std::getenv("FASTNORM_ISA");
  if (env == nullptr || *env == '\0') return detect_best();
  Isa requested = parse_isa(env);
  if (!isa_supported(requested))
    throw std::invalid_argument(std::string("FASTNORM_ISA=") + env + " is not supported by this CPU or build; " +
                                "the highest supported level is " + isa_name(detect_best()));
  return requested;
}

Isa& current() {
  static Isa isa = initial_isa();
  return isa;
}

}  // namespace

Isa best_supported_isa() {
  static const Isa best = detect_best();
  return best;
}

bool isa_supported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(best_supported_isa()); }

Isa active_isa() { return current(); }

void set_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA level '") + isa_name(isa) +
                                "' is not supported by this CPU or build; the highest supported level is " +
                                isa_name(best_supported_isa()));
  current() = isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::v4: return "v4";
    case Isa::v3: return "v3";
    case Isa::baseline: break;
  }
  return "baseline";
}

Isa parse_isa(const std::string& name) {
  if (name == "baseline") return Isa::baseline;
  if (name == "v3") return Isa::v3;
  if (name == "v4") return Isa::v4;
  throw std::invalid_argument("unknown ISA level '" + name + "': expected one of baseline, v3, v4");
}

}  // namespace fastnorm
