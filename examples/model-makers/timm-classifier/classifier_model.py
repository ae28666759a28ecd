"""timm's MobileNetV3 classifier: `clinibox convert --model classifier_model:lesion_mobilenet`.

``timm.create_model("mobilenetv3_small_100", num_classes=2)``: class 0 ``normal``, class 1
``lesion``. Its head has layers after the global pool (``conv_head``, a 1×1 convolution,
then ``act2``, ``flatten`` and the ``classifier``), so the converter adds the heatmap the box
shows as Grad-CAM computed in the graph, and says so in its report.

On your workstation start from ImageNet: ``pretrained=True`` (timm downloads the weights
once). Here nothing is downloaded, and from scratch, in a minute, on these phantoms, the
classifier does not learn to find their faint lesions among the lesion-like decoys drawn on
purpose: the example shows the path, not a model to use (see convert.toml).
"""

import timm
from torch import nn


def lesion_mobilenet() -> nn.Module:
    """The factory `clinibox convert` calls; its weights come from ``classifier.pt``."""
    return timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=2)
