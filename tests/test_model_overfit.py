"""End to end on CPU: the tiny preset memorises a tiny episode set, then the policy replays the logged actions.

Episodes go through the real tokenizer, sequence builder and collator, so this also checks that training
(``Gato.forward`` on collated episodes) and acting (``TorchPolicy`` with its KV cache) see the same layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gato_robot.core.sequence import build_episode, collate
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.config import preset
from gato_robot.model.embedding import inputs_from_batch
from gato_robot.model.gato import Gato
from gato_robot.model.policy import TorchPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 150  # 15-25 s on one core (measured; a figure, not an assertion); the loss passes 1/10 near step 60


def spec() -> RobotSpec:
    return RobotSpec(
        name="overfit_2cam",
        observations=(
            TensorSpec("camera/left", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("camera/right", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("proprio/joints", Kind.CONTINUOUS, (7,)),
        ),
        actions=(TensorSpec("action", Kind.CONTINUOUS, (3,), Encoding.LINEAR, low=(-1, -1, -1), high=(1, 1, 1)),),
    )


def episodes(robot: RobotSpec, n: int = 4, length: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        obs, acts = [], []
        for _ in range(length):
            joints = rng.uniform(-1, 1, 7)
            obs.append({
                "camera/left": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                "camera/right": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                "proprio/joints": joints,
            })
            acts.append(np.tanh(2 * joints[:3]).astype(np.float32))
        out.append((obs, acts))
    return out


def test_tiny_model_overfits_tiny_episode_set_and_policy_replays_it():
    torch.manual_seed(0)
    robot = spec()
    tok = Tokenizer(robot)
    data = episodes(robot)
    blocks = [build_episode(tok, obs, acts) for obs, acts in data]
    batch = collate(blocks)  # evaluation-mode patch positions, as the policy uses
    x = inputs_from_batch(batch)
    loss_mask, valid = torch.as_tensor(batch.loss_mask), torch.as_tensor(batch.valid)

    model = Gato(preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    for _ in range(STEPS):
        loss = model(x, loss_mask, valid, return_logits=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps"

    # the trained policy reproduces the logged action tokens of the first episode, step by step
    policy = TorchPolicy(model.eval(), robot, tokenizer=tok)
    state = policy.initial_state()
    obs, acts = data[0]
    for o, a in zip(obs, acts):
        _, state = policy.step(o, state)
        np.testing.assert_array_equal(state.action_tokens, tok.tokenize_action(a))
