"""MobileViT CUDA plugin library (`plugins/`): Python access to its kernels' C ABI.

The TensorRT wrappers in the same library are loaded by TensorRT itself (trtexec
`--staticPlugins`/`--dynamicPlugins`, Triton's `plugins=` backend option); this package only
drives the kernels directly, for the GPU tests and benchmarks.
"""

from repo_gen.plugins.kernels import KernelLibrary, find_library, load_library

__all__ = ["KernelLibrary", "find_library", "load_library"]
