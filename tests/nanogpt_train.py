"""A nanoGPT-shaped training script (Karpathy's ``train.py`` and ``model.py`` cut to the bone) with
the torch ``Watcher`` added in the README's plain form; :mod:`tests.test_nanogpt_script` runs it.

Usage: ``python nanogpt_train.py OUT_DIR scratch|resume MAX_ITERS [KILL_AT]``. It keeps what
matters to the watcher: GPT blocks, the tied embedding (``transformer.wte.weight =
lm_head.weight``), AdamW with decay / no-decay parameter groups, ``torch.compile`` when it works
(the checkpoint's keys then start with ``_orig_mod.``), a checkpoint dict like nanoGPT's saved at
each evaluation, ``init_from='resume'``. With ``KILL_AT`` the process SIGKILLs itself at that
iteration (a crash: nothing runs at exit). It never calls ``ww.close()``: the final analysis is
the one the watcher takes at interpreter exit. One difference from nanoGPT: the loop stops right
after its last checkpoint (nanoGPT takes one more update after it), so the checkpoint holds the
final weights.
"""

import math
import os
import signal
import sys

import torch
import torch.nn as nn
from torch.nn import functional as F

from ww_callbacks.integrations.torch import Watcher

out_dir, init_from, max_iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else -1
eval_interval = max_iters // 2
batch_size, block_size = 8, 16
n_layer, n_head, n_embd = 2, 2, 32
learning_rate, weight_decay = 1e-3, 0.1
compile = os.environ.get("WW_TEST_COMPILE", "1") == "1"
config = {k: v for k, v in globals().items()
          if not k.startswith("_") and isinstance(v, (int, float, bool, str))}


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(n_embd, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(n_embd), CausalSelfAttention()
        self.ln_2, self.mlp = nn.LayerNorm(n_embd), MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block() for _ in range(n_layer)]), ln_f=nn.LayerNorm(n_embd)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1))
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def configure_optimizers(self):
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        groups = [{"params": [p for p in params.values() if p.dim() >= 2],
                   "weight_decay": weight_decay},
                  {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95))


text = "".join(f"{i * i % 97} first citizen: before we proceed any further, hear me speak.\n"
               for i in range(200))
chars = sorted(set(text))
data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
gen = torch.Generator().manual_seed(1337)


def get_batch():
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=gen)
    x = torch.stack([data[i:i + block_size] for i in ix])
    return x, torch.stack([data[i + 1:i + 1 + block_size] for i in ix])


torch.manual_seed(1337)
os.makedirs(out_dir, exist_ok=True)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
if init_from == "scratch":
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      vocab_size=len(chars))
    model = GPT(len(chars))
    iter_num, best_val_loss = 0, 1e9
else:
    checkpoint = torch.load(ckpt_path, map_location="cpu")
    model_args = checkpoint["model_args"]
    model = GPT(model_args["vocab_size"])
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k in list(state_dict):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    model.load_state_dict(state_dict)
    iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
    gen.manual_seed(1337 + iter_num)
optimizer = model.configure_optimizers()
if init_from == "resume":
    optimizer.load_state_dict(checkpoint["optimizer"])
if compile:
    try:  # the eager backend: the same wrapper and names as inductor, without a C++ build
        compiled = torch.compile(model, backend="eager")
        compiled(*get_batch())
        model = compiled
    except Exception as err:  # a CPU without what torch.compile needs: run uncompiled
        print(f"torch.compile failed, running uncompiled: {err!r}", file=sys.stderr)

# the Watcher, in the README's plain form (+ the two resume lines for a checkpoint dict)
# (wait="always": this toy trains faster than it is analysed; the test wants every analysis)
ww = Watcher(model, log_dir=os.path.join(out_dir, "ww"), every_n_steps=5, optimizer=optimizer,
             tensorboard=False, wait="always")
if init_from == "resume":
    ww.load_state_dict(checkpoint["ww"])

raw_model = model
while True:
    if iter_num % eval_interval == 0 and iter_num > 0:
        with torch.no_grad():
            val_loss = model(*get_batch()).item()
        best_val_loss = min(best_val_loss, val_loss)
        checkpoint = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                      "model_args": model_args, "iter_num": iter_num,
                      "best_val_loss": best_val_loss, "config": config,
                      "ww": ww.state_dict()}
        torch.save(checkpoint, ckpt_path)
        print(f"saving checkpoint at {iter_num}", flush=True)
    if iter_num >= max_iters:  # (nanoGPT: one more update after the last checkpoint)
        break
    loss = model(*get_batch())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    ww.step()
    if iter_num == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
print(f"done at {iter_num}", flush=True)
