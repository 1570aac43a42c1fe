#!/usr/bin/python3
"""A small real model for the modelpack demo: an MLP digit classifier in plain NumPy.

  train_digits.py train OUT_DIR
      Trains a 64-64-10 MLP (ReLU, softmax cross-entropy, Adam) on scikit-learn's bundled 8x8
      digits data set (no download) and writes, under OUT_DIR/npy/:
        model/fc1/weight.npy [64, 64] f32   model/fc1/bias.npy [64] f32
        model/fc2/weight.npy [10, 64] f32   model/fc2/bias.npy [10] f32
        data/test_x.npy [N, 64] f32         data/test_y.npy [N] i64
        data/label_names.npy [10] i64       (class index -> digit)
      and OUT_DIR/meta.args: `mpk pack` metadata options, one per line.

  train_digits.py check NPY_DIR EXTRACTED_DIR
      Checks that every extracted .npy equals its original (values, dtype, shape), then runs
      inference with the extracted weights on the extracted test set and compares the accuracy
      with the one measured at training time. Exit status 1 on any difference.
"""
import os
import sys
import time

import numpy as np

HIDDEN = 64
EPOCHS = 60
BATCH = 32
LR = 2e-3
SEED = 0


def forward(x, w1, b1, w2, b2):
    """Logits of the MLP; weights are [out, in] (the PyTorch convention)."""
    h = np.maximum(x @ w1.T + b1, 0)
    return h @ w2.T + b2


def accuracy(arrays):
    logits = forward(arrays["data/test_x"], arrays["model/fc1/weight"], arrays["model/fc1/bias"],
                     arrays["model/fc2/weight"], arrays["model/fc2/bias"])
    pred = arrays["data/label_names"][np.argmax(logits, axis=1)]
    return float(np.mean(pred == arrays["data/test_y"]))


def train(out_dir):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixels 0..16 -> 0..1
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)

    rng = np.random.default_rng(SEED)
    n_in, n_out = x.shape[1], 10
    params = {  # He initialisation
        "w1": (rng.standard_normal((HIDDEN, n_in)) * np.sqrt(2 / n_in)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.standard_normal((n_out, HIDDEN)) * np.sqrt(2 / HIDDEN)).astype(np.float32),
        "b2": np.zeros(n_out, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    onehot = np.eye(n_out, dtype=np.float32)

    for epoch in range(EPOCHS):
        order = rng.permutation(len(x_tr))
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            xb, yb = x_tr[idx], onehot[y_tr[idx]]
            # forward
            z1 = xb @ params["w1"].T + params["b1"]
            h = np.maximum(z1, 0)
            logits = h @ params["w2"].T + params["b2"]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            # backward (mean softmax cross-entropy)
            g = (p - yb) / len(idx)
            grads = {"w2": g.T @ h, "b2": g.sum(0)}
            gh = (g @ params["w2"]) * (z1 > 0)
            grads["w1"] = gh.T @ xb
            grads["b1"] = gh.sum(0)
            # Adam
            step += 1
            for k in params:
                m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
                v[k] = beta2 * v[k] + (1 - beta2) * grads[k] ** 2
                mh = m[k] / (1 - beta1 ** step)
                vh = v[k] / (1 - beta2 ** step)
                params[k] = (params[k] - LR * mh / (np.sqrt(vh) + eps)).astype(np.float32)
    seconds = time.perf_counter() - t0

    arrays = {
        "model/fc1/weight": params["w1"], "model/fc1/bias": params["b1"],
        "model/fc2/weight": params["w2"], "model/fc2/bias": params["b2"],
        "data/test_x": np.ascontiguousarray(x_te), "data/test_y": y_te,
        "data/label_names": np.arange(10, dtype=np.int64),
    }
    acc = accuracy(arrays)
    train_acc = float(np.mean(np.argmax(forward(x_tr, params["w1"], params["b1"], params["w2"],
                                                params["b2"]), axis=1) == y_tr))
    npy_dir = os.path.join(out_dir, "npy")
    for name, a in arrays.items():
        path = os.path.join(npy_dir, name + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, a)

    meta = [
        ("--meta", "model.name=digits-mlp"),
        ("--meta", f"model.architecture=mlp {n_in}-{HIDDEN}-{n_out} relu, weights [out, in]"),
        ("--meta", "train.dataset=sklearn digits (8x8, 10 classes)"),
        ("--meta-int", f"train.epochs={EPOCHS}"),
        ("--meta-int", f"train.samples={len(x_tr)}"),
        ("--meta-int", f"test.samples={len(x_te)}"),
        ("--meta-float", f"test.accuracy={acc!r}"),
        ("--meta-float", f"train.accuracy={train_acc!r}"),
        ("--meta-bool", "demo=true"),
    ]
    with open(os.path.join(out_dir, "meta.args"), "w") as f:
        for opt, val in meta:
            f.write(f"{opt}\n{val}\n")
    with open(os.path.join(out_dir, "accuracy.txt"), "w") as f:
        f.write(repr(acc) + "\n")
    print(f"   trained MLP {n_in}-{HIDDEN}-{n_out} on {len(x_tr)} digits in {seconds:.2f} s: "
          f"train accuracy {train_acc:.4f}, test accuracy {acc:.4f} ({len(x_te)} images)")
    return 0


def load_tree(root):
    out = {}
    for r, _, files in os.walk(root):
        for f in files:
            if f.endswith(".npy"):
                rel = os.path.relpath(os.path.join(r, f), root)[:-4].replace(os.sep, "/")
                out[rel] = np.load(os.path.join(r, f), allow_pickle=False)
    return out


def check(npy_dir, extracted_dir):
    orig, ext = load_tree(npy_dir), load_tree(extracted_dir)
    ok = True
    if sorted(orig) != sorted(ext):
        print(f"   MISMATCH: tensors {sorted(orig)} vs extracted {sorted(ext)}")
        return 1
    for name in sorted(orig):
        a, b = orig[name], ext[name]
        same = a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        ok &= same
        if not same:
            print(f"   MISMATCH: {name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
    print(f"   {len(orig)} extracted tensors equal the originals (values, dtype, shape): "
          f"{'yes' if ok else 'NO'}")
    with open(os.path.join(os.path.dirname(os.path.normpath(npy_dir)), "accuracy.txt")) as f:
        trained = float(f.read())
    acc = accuracy(ext)
    print(f"   test accuracy with the extracted weights: {acc:.4f} (at training: {trained:.4f}) "
          f"-> {'same' if acc == trained else 'DIFFERENT'}")
    return 0 if ok and acc == trained else 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "train":
        return train(sys.argv[2])
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        return check(sys.argv[2], sys.argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
