"""Summarise an ONNX Runtime profile (Chrome trace JSON): time per op type and the slowest
nodes, per run after the first (warm-up) one. Usage: python3 profile_summary.py PROFILE.json"""
import collections, json, sys

ev = json.load(open(sys.argv[1]))
runs = [e for e in ev if e.get("cat") == "Session" and e.get("name") == "model_run"]
nodes = [e for e in ev if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
skip_until = runs[0]["ts"] + runs[0]["dur"] if len(runs) > 1 else 0
nodes = [e for e in nodes if e["ts"] >= skip_until]
n_runs = max(1, len(runs) - (1 if len(runs) > 1 else 0))
by_op, by_node = collections.Counter(), collections.Counter()
for e in nodes:
    a = e.get("args", {})
    by_op[(a.get("op_name", "?"), a.get("provider", "?"))] += e["dur"]
    by_node[(e["name"][: -len("_kernel_time")], a.get("op_name", "?"))] += e["dur"]
total = sum(by_op.values())
print(f"profile: {len(runs)} runs, {n_runs} counted; node time per run {total / n_runs / 1000:.2f} ms;",
      "run wall times ms:", [round(r["dur"] / 1000, 2) for r in runs])
for (op, prov), d in by_op.most_common(30):
    print(f"  {op:28s} {prov:24s} {d / n_runs / 1000:8.3f} ms  {100 * d / max(total, 1):5.1f}%")
print("slowest nodes:")
for (name, op), d in by_node.most_common(25):
    print(f"  {d / n_runs / 1000:8.3f} ms  {op:20s} {name}")
