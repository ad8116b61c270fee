"""Reference for graphs/step tests: torchvision's lraspp_mobilenet_v3_large in float64.

usage: torch_reference.py WEIGHTS.safetensors BATCH.safetensors OUT.safetensors

Loads WEIGHTS strictly into the model, then on BATCH (image float32 [N,3,H,W], target int64
[N,H,W]) computes: the training-mode forward, 0.5*CE + 0.5*Dice and its gradients (grad.<name>),
the batch-norm running statistics after that forward (<bn>.running_mean/var.next), the
parameters after one torch.optim.AdamW step with lr 1e-3 (<name>.next), and the eval-mode
logits of the loaded weights (eval_logits). Writes them to OUT.
"""
import json, struct, sys
import torch
import torch.nn.functional as F
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

DT = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "U8": torch.uint8, "F16": torch.float16}
RDT = {v: k for k, v in DT.items()}

def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(data[s:e]), dtype=DT[v["dtype"]]) if e > s else torch.empty(0, dtype=DT[v["dtype"]])
        out[k] = t.reshape(v["shape"]).clone()
    return out

def write(path, tensors):
    head, chunks, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        raw = t.numpy().tobytes()
        head[k] = {"dtype": RDT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(head).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)

def loss_fn(logits, target):
    ce = F.cross_entropy(logits, target)
    p = logits.softmax(1)[:, 1]
    t = (target == 1).to(logits.dtype)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return 0.5 * ce + 0.5 * dice, ce, dice

def main():
    weights, batch, out_path = read(sys.argv[1]), read(sys.argv[2]), sys.argv[3]
    m = lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None)
    m.load_state_dict(weights, strict=True)
    m = m.double()
    x = batch["image"].double()
    y = batch["target"].long()
    out = {}
    m.eval()
    with torch.no_grad():
        out["eval_logits"] = m(x)["out"].float()
    m.train()
    logits = m(x)["out"]
    loss, ce, dice = loss_fn(logits, y)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    out["loss_ce"] = ce.detach().reshape(1)
    out["loss_dice"] = dice.detach().reshape(1)
    for name, p in m.named_parameters():
        out["grad." + name] = p.grad.detach()
    for name, b in m.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            out[name + ".next"] = b.detach()
    # One AdamW step (torch defaults, lr 1e-3) on these gradients.
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    opt.step()
    for name, p in m.named_parameters():
        out[name + ".next"] = p.detach()
    write(out_path, {k: (v.double() if v.is_floating_point() else v) for k, v in out.items()})
    print("ok", len(out))

main()
