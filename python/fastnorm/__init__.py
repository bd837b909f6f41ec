"""fastnorm: fast, reproducible CPU kernels for the building blocks of neural-network training.

Activation functions (forward and backward) and mergeable statistics on NumPy arrays, computed by SIMD C++ kernels chosen for this CPU
and split over OpenMP threads, with results that are bitwise the same for any thread count.
"""
from fastnorm import _C, init, layers, preprocessing, random
from fastnorm._memory import buffer_cache_info, set_buffer_cache
from fastnorm._threads import get_num_threads, set_num_threads
from fastnorm.activations import *  # noqa: F401,F403  (the public functions are listed in activations.__all__)
from fastnorm.activations import __all__ as _activation_names
from fastnorm.folding import fold_batch_norm
from fastnorm.gradcheck import GradcheckError, GradcheckReport, gradcheck, numerical_gradient
from fastnorm.info import info
from fastnorm.group_norms import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from fastnorm.normalization import batch_norm, batch_norm_backward
from fastnorm.row_norms import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from fastnorm.regularization import (alpha_dropout, alpha_dropout_backward, channel_dropout, channel_dropout_backward,
                              dropout, dropout_backward)
from fastnorm.losses import (cross_entropy, cross_entropy_backward, log_softmax, log_softmax_backward, nll_loss,
                              nll_loss_backward, softmax, softmax_backward)
from fastnorm.statistics import Moments, Scatter, merge_moments, merge_scatter, moments, scatter
from fastnorm.batch_norm_stages import (batch_norm_apply, batch_norm_grad_sums, batch_norm_input_grad,
                                        batch_norm_stats, update_running_stats)
from fastnorm import diagnostics  # noqa: E402  (uses the functions above)

__version__ = _C.build_info()["version"]

_C.isa()  # applies FASTNORM_ISA now: an unsupported level is a clear ValueError at import, never SIGILL

__all__ = ["layers", "init", "random", "preprocessing", "diagnostics", "gradcheck", "numerical_gradient",
           "GradcheckReport", "GradcheckError", "info", "get_num_threads", "set_num_threads", "set_buffer_cache",
           "buffer_cache_info", "Moments", "moments", "merge_moments", "Scatter", "scatter", "merge_scatter",
           "batch_norm_stats", "batch_norm_apply", "batch_norm_grad_sums", "batch_norm_input_grad",
           "update_running_stats", "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "rms_norm", "rms_norm_backward", "group_norm", "group_norm_backward", "instance_norm",
           "instance_norm_backward", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
           "cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward", "dropout",
           "dropout_backward", "alpha_dropout", "alpha_dropout_backward", "channel_dropout",
           "channel_dropout_backward", "fold_batch_norm", *_activation_names]
