"""Exact simplifications of a copy of the model before export (the checkpoint is untouched).

The front end runs at full resolution, where ONNX Runtime's blocked (NCHWc) convolutions
cost most for the least work. Measured on the default model at 512x384 (1 thread), the front
end's two convolutions and the layout reorders around them took ~28 % of the run::

    before:  x ─► Conv 1x1 (3→3, colour) ─► Conv 3x3 (3→9, gradients) ─► stem Conv 3x3/2 (9→24)
                   └ NCHWc pads 3→16 ┘        └ 9→16, then reordered to NCHW for the stem ┘
    after:   x ─► Conv 3x3 (3→16) ──────────────────────────────────► stem Conv 3x3/2 (16→24)
                   colour folded into the gradients;   the 7 extra channels are zero filters,
                   output padded with zero filters     met by zero stem weights

Both steps are exact in real arithmetic: the colour map is linear without bias, so it commutes
with the zero padding of the 3x3 convolution; zero filters add zero. In float32 the folded
weights round once more (~1e-7 relative), far inside ``tolerance("onnx_score")``. The padded
width is the CPU's channel block (16 for AVX-512, a multiple of AVX2's 8), so the blocked layout
costs nothing extra and no reorder is needed between the two convolutions.
"""

from __future__ import annotations

import copy

from cdiqa import _lazy

#: channel block the front end's output is padded to
BLOCK = 16


def fold_front_end(model, block: int = BLOCK):
    """A copy of ``model`` whose front end is one convolution padded to ``block`` channels.

    The pyramid encoder (``ModelConfig.pyramid``) has no full-resolution front end to fold:
    its only full-resolution op is the 1x1 colour map, followed by pooling; it is copied as is.
    """
    torch = _lazy.torch()
    nn = torch.nn
    from cdiqa.model.network import FixedFrontEnd

    model = copy.deepcopy(model)
    if model.cfg.frontend == "pyramid":
        return model.eval()
    encoder = model.encoder
    front = encoder.front
    if isinstance(front, FixedFrontEnd):
        weight = torch.einsum("ocyx,ci->oiyx", front.filters, front.colour[:, :, 0, 0])
        bias = weight.new_zeros(weight.shape[0])
    else:  # the learned baseline: already one convolution
        weight, bias = front.conv.weight.detach(), front.conv.bias.detach()
    n = weight.shape[0]
    padded = -(-n // block) * block
    conv = nn.Conv2d(weight.shape[1], padded, 3, padding=1)
    stem = encoder.stem[0]
    new_stem = nn.Conv2d(padded, stem.out_channels, stem.kernel_size, stem.stride, stem.padding)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:n] = weight
        conv.bias.zero_()
        conv.bias[:n] = bias
        new_stem.weight.zero_()
        new_stem.weight[:, :n] = stem.weight
        new_stem.bias.copy_(stem.bias)
    encoder.front = conv
    encoder.stem[0] = new_stem
    return model.eval()
