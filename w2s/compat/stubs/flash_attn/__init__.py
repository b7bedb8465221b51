"""Import-only stand-in for flash-attn on machines without CUDA.

OpenRLHF imports ``flash_attn.bert_padding`` and ``flash_attn.utils.distributed`` at module top level
(``openrlhf/models/ring_attn_utils.py``) although it only calls them for sample packing and ring attention.
These modules mirror the public signatures of flash-attn's padding helpers with plain torch code, which is all
sample packing needs of them (transformers' sdpa and eager attention keep the packed rows apart); ring attention
needs flash-attn's kernels. transformers still reports flash-attention-2 as unavailable, so the stub is never
used as an attention kernel. :func:`w2s.compat.cpu.apply` puts it on ``sys.path`` only when the real
package is missing and CUDA is not available.
"""

__version__ = "0.0.0+w2s.cpustub"
