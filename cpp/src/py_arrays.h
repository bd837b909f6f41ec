// What the binding sources share: reading NumPy arrays' data and dtypes, and results from the buffer cache.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <vector>

namespace py = pybind11;

namespace fastnorm::py_arrays {

// Whether `d` is the dtype of C++ type T in native byte order, compared by value as NumPy compares dtypes: an
// array that went through pickle (multiprocessing, joblib, DataLoader workers) has an equal dtype object that is
// not NumPy's cached one, so identity would refuse it.
template <class T>
inline bool is_dtype_of(const py::dtype& d) {
  return d.num() == py::dtype::of<T>().num() && (d.byteorder() == '=' || d.byteorder() == '|');
}

template <class T>
inline const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
inline T* mptr(const py::array& a) {
  return static_cast<T*>(const_cast<void*>(a.data()));  // output() checked that it is writeable
}

template <class T>
inline const T* cptr_or_null(const std::optional<py::array>& a) {
  return a ? cptr<T>(*a) : nullptr;
}

// An uninitialised C-ordered array whose memory comes from, and goes back to, the buffer cache (buffers.h).
py::array empty(const std::vector<py::ssize_t>& shape, const py::dtype& dtype);

// True for an array from empty() whose buffer came from the cache (its pages are mapped already).
bool buffer_reused(const py::array& a);

// Registers the normalizations' common calls (common_calls.cpp).
void add_common_calls(py::module_& m);

}  // namespace fastnorm::py_arrays
