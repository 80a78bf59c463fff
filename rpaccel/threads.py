"""One BLAS thread for the project's products.

The int8 products of the reference, the functional and timed models and the host's pipelines are small (a
sub-batch of tens of items by a layer of hundreds): a second BLAS thread cannot speed them up, and on a loaded
machine (this project's 2 shared cores, pytest's two workers, a place-and-route beside) OpenBLAS's spinning threads
make them hundreds of times slower: a 41 x 512 by 512 x 56 product took 34 ms with OpenBLAS's default threads
against 0.13 ms with one. The command line and the test session therefore run with one BLAS thread
(:func:`limit_blas_threads`); library entry points that run many products (the chip's functional model) hold the
limit while they run (:func:`one_blas_thread`), so a program that imports them gets the same speed.
"""

import contextlib
import os

from threadpoolctl import threadpool_limits

__all__ = ["limit_blas_threads", "one_blas_thread", "one_thread_children"]

#: A worker is one core: numpy's BLAS and OpenMP threads limited to one in the spawned processes (a worker that
#: used every core would make ``workers`` a meaningless count and the measured service time another machine's).
_ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")


def one_blas_thread():
    """A context manager under which the BLAS libraries loaded in this process use one thread."""
    return threadpool_limits(limits=1, user_api="blas")


def limit_blas_threads():
    """Limit the BLAS libraries loaded in this process to one thread from now on (the command line, the tests)."""
    threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def one_thread_children():
    """The environment of processes spawned inside: one BLAS/OpenMP thread each."""
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
