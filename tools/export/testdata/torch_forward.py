"""Reference for tools/export tests: torchvision's LR-ASPP MobileNetV3-Large on exported weights.

usage: torch_forward.py WEIGHTS.safetensors INPUT.safetensors OUT.safetensors [WEIGHTS INPUT OUT ...]

Builds torchvision's lraspp_mobilenet_v3_large(num_classes=2) -- with the width multiplier recorded
in the file's cardseg.training_config metadata when it is not 1, through torchvision's own
MobileNetV3 configuration -- loads WEIGHTS with load_state_dict(strict=True), and writes the
eval-mode logits of INPUT's "image" (float32 [N,3,H,W]) computed in float64 to OUT as "logits";
the same for every further triple (one interpreter start for several models).
"""
import json, struct, sys
import torch
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.segmentation import lraspp_mobilenet_v3_large
from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

DT = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "F16": torch.float16}
RDT = {v: k for k, v in DT.items()}


def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    data = b[8 + n:]
    meta = head.pop("__metadata__", {})
    out = {}
    for k, v in head.items():
        s, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(data[s:e]), dtype=DT[v["dtype"]]) if e > s else torch.empty(0, dtype=DT[v["dtype"]])
        out[k] = t.reshape(v["shape"]).clone()
    return out, meta


def write(path, tensors):
    head, chunks, off = {}, [], 0
    for k in sorted(tensors):
        raw = tensors[k].contiguous().numpy().tobytes()
        head[k] = {"dtype": RDT[tensors[k].dtype], "shape": list(tensors[k].shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(head).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def forward(weights_path, input_path, out_path):
    weights, meta = read(weights_path)
    batch, _ = read(input_path)
    width = json.loads(meta.get("cardseg.training_config", "{}")).get("width_mult", 1.0)
    if width == 1.0:
        model = lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None)
    else:
        setting, last = _mobilenet_v3_conf("mobilenet_v3_large", width_mult=width, dilated=True)
        model = _lraspp_mobilenetv3(MobileNetV3(setting, last), num_classes=2)
    model.load_state_dict(weights, strict=True)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(batch["image"].double())["out"]
    write(out_path, {"logits": logits})
    print("ok", width, tuple(logits.shape))


args = sys.argv[1:]
if not args or len(args) % 3:
    sys.exit(__doc__)
for i in range(0, len(args), 3):
    forward(*args[i:i + 3])
