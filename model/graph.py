"""Rewrites of an exported graph that keep its arithmetic and cut its memory traffic.

`split_cached_attention`: torch's export of attention over cached plus new keys concatenates the cache with
the new keys and values, transposes the keys and scales them — four copies of the whole cache per layer and pass.
A window pass (a dozen slots against ~380 cached positions) spends a third of its time there on this CPU. The
rewrite scores the query against the cached keys and against the new keys separately (the query carries the
whole scale; each transpose folds into its matrix product, ONNX Runtime's MatMulTransposeFusion), concatenates
the two small score matrices instead, and sums the two weighted sums of values. The same softmax, the same
mask: equal up to float rounding.

    python -m model.graph model/default    # rewrite a model directory's graphs in place, and its card
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

INT64_MAX = 2 ** 63 - 1
SPLIT_PREFIX = "/split_attention_"   # the rewritten layers' node names: /split_attention_<i>/...


def _index(graph: onnx.GraphProto) -> tuple[dict, dict]:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def _match(mm, producer, consumers) -> dict | None:
    """One layer's exported attention around its score MatMul `mm`, or None if it is not torch's pattern:
    MatMul(Mul(q, s), Mul(Transpose(Concat(past_k, k)), s)) → Add(mask) → Softmax → Where(IsNaN) →
    MatMul(·, Concat(past_v, v))."""
    get = lambda name, op: (n if (n := producer.get(name)) is not None and n.op_type == op else None)
    only = lambda name, op: (c[0] if len(c := consumers.get(name, [])) == 1 and c[0].op_type == op else None)
    if len(mm.input) != 2 or not (q := get(mm.input[0], "Mul")) or not (ks := get(mm.input[1], "Mul")):
        return None
    if not (tr := get(ks.input[0], "Transpose")) or list(tr.attribute[0].ints) != [0, 1, 3, 2] or \
            not (kcat := get(tr.input[0], "Concat")) or len(kcat.input) != 2:
        return None
    if not (add := only(mm.output[0], "Add")) or not (soft := only(add.output[0], "Softmax")):
        return None
    where = next((c for c in consumers.get(soft.output[0], []) if c.op_type == "Where"), None)
    if where is None or not (pv := only(where.output[0], "MatMul")) or not (vcat := get(pv.input[1], "Concat")):
        return None
    if any(len(consumers.get(n.output[0], [])) != 1 for n in (ks, tr, kcat, vcat)) or \
            any(a.i != 2 for n in (kcat, vcat) for a in n.attribute if a.name == "axis"):
        return None
    return {"q": q, "scale": ks.input[1], "drop": (ks, tr, kcat, mm, vcat, pv), "past_k": kcat.input[0],
            "k": kcat.input[1], "past_v": vcat.input[0], "v": vcat.input[1], "scores": mm.output[0],
            "probs": where.output[0], "out": pv.output[0]}


def _split(m: dict, p: str) -> list:
    const = lambda name, v: helper.make_node("Constant", [], [name], name=name,
                                             value=helper.make_tensor(name, TensorProto.INT64, [1], [v]))
    node = lambda op, ins, out, **kw: helper.make_node(op, ins, [out], name=out, **kw)
    return [
        node("Mul", [m["q"].output[0], m["scale"]], p + "q"),            # the query with the whole scale
        node("Transpose", [m["past_k"]], p + "past_kT", perm=[0, 1, 3, 2]),
        node("Transpose", [m["k"]], p + "kT", perm=[0, 1, 3, 2]),
        node("MatMul", [p + "q", p + "past_kT"], p + "past_scores"),
        node("MatMul", [p + "q", p + "kT"], p + "new_scores"),
        node("Concat", [p + "past_scores", p + "new_scores"], m["scores"], axis=-1),
        helper.make_node("Shape", [m["past_k"]], [p + "past"], name=p + "past", start=2, end=3),
        const(p + "zero", 0), const(p + "end", INT64_MAX), const(p + "axis", -1),
        node("Slice", [m["probs"], p + "zero", p + "past", p + "axis"], p + "past_probs"),
        node("Slice", [m["probs"], p + "past", p + "end", p + "axis"], p + "new_probs"),
        node("MatMul", [p + "past_probs", m["past_v"]], p + "past_out"),
        node("MatMul", [p + "new_probs", m["v"]], p + "new_out"),
        node("Add", [p + "past_out", p + "new_out"], m["out"]),
    ]


def _toposort(graph: onnx.GraphProto, nodes: list) -> list:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    order = []
    while nodes:
        rest = [n for n in nodes if not all(i in ready for i in n.input)]
        for n in nodes:
            if n not in rest:
                order.append(n)
                ready.update(n.output)
        if len(rest) == len(nodes):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}")
        nodes = rest
    return order


def split_cached_attention(model: onnx.ModelProto) -> int:
    """Rewrite every layer's attention in `model` (in place); returns how many were rewritten (0: none matched,
    e.g. a graph rewritten already or exported by other code)."""
    g = model.graph
    producer, consumers = _index(g)
    found = [m for mm in g.node if mm.op_type == "MatMul" and (m := _match(mm, producer, consumers))]
    if not found:
        return 0
    drop = {id(n) for m in found for n in m["drop"]}
    added = [n for i, m in enumerate(found) for n in _split(m, f"{SPLIT_PREFIX}{i}/")]
    nodes = _toposort(g, [n for n in g.node if id(n) not in drop] + added)
    del g.node[:]
    g.node.extend(nodes)
    return len(found)


def rewrite_file(path: Path) -> int:
    model = onnx.load(str(path))
    n = split_cached_attention(model)
    if n:
        onnx.save(model, str(path))
    return n


def rewrite_model_dir(model_dir: Path) -> dict:
    """Rewrite every ONNX graph of a model directory and update its card's digests. → {file: layers rewritten}."""
    from model.tokenizer import file_sha256
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    calibrator_path = model_dir / "calibrator.json"
    calibrator = json.loads(calibrator_path.read_text()) if calibrator_path.exists() else {}
    done = {}
    for name in sorted(n for n in card.get("files", {}) if n.endswith(".onnx")):
        done[name] = rewrite_file(model_dir / name)
        if not done[name]:
            continue
        old, card["files"][name] = card["files"][name], file_sha256(model_dir / name)
        card.setdefault("graph", {})[name] = {"attention": "split cached attention (model/graph.py)",
                                              "rewritten_from_sha256": old}
        if calibrator.get("model_sha256") == old:   # the same weights and arithmetic: the fit still holds
            calibrator["model_sha256"] = card["files"][name]
            calibrator_path.write_text(json.dumps(calibrator, indent=1) + "\n")
    card_path.write_text(json.dumps(card, indent=1))
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.graph", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path)
    print(json.dumps(rewrite_model_dir(p.parse_args(argv).model_dir)))


if __name__ == "__main__":
    main()
