#include "fastnorm/parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastnorm {

bool have_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int resolve_threads(int requested) { return requested > 0 ? requested : max_threads(); }

}  // namespace fastnorm
