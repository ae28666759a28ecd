"""torchvision's LR-ASPP segmenter: `clinibox convert --model lraspp_model:lesion_lraspp`.

``lraspp_mobilenet_v3_large`` as torchvision builds it, two classes: channel 0 the background,
channel 1 the lesion. Its ``forward`` returns a dict ``{"out": [N, 2, H, W]}`` of logits;
convert.toml names that output and declares the softmax head with its background, so that the
box never calls the background a lesion and names each lesion "lesion". On your workstation,
``weights_backbone="IMAGENET1K_V1"`` starts from ImageNet; here nothing is downloaded.
"""

from torchvision.models.segmentation import LRASPP, lraspp_mobilenet_v3_large


def lesion_lraspp() -> LRASPP:
    """The factory `clinibox convert` calls; its weights come from ``lraspp.pt``."""
    return lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None)
