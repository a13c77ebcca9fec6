"""One recipe per method: everything that is true of a method, in one place.

A recipe says, for one method as TRL 1.12 runs it: its trainer and config class, the defaults of
the fields this project sets or relies on (KL weight, generations and chunking, loss type, the
starting learning rate and its reason), what its loop keeps resident and how many rows a
micro-step runs, whether a reference model is loaded and when it can be precomputed, its dataset
columns, its key metrics and the knobs the advisor explains.

The planner (memory, time, fit, trace), the runners (TRL fields, pre-flight, monitor) and the
advisor's guidance read it; no other module switches on the method for any of this. It is data
plus pure functions: the TRL import lives only where a trainer is built (`runners.train`).

Adding a method: one `Recipe` here, its decision rules in `advisor/decision/rules.py`, a step in
`planner/trace/steps/` if it can be traced, and its rows in the agreement tests
(`tests/test_plan_is_the_run.py`), which then check the new method's written configs against
its plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from planner.architectures import SUPPORTED_TYPES, architecture
from planner.constants import learning_rate
from planner.data_rules import (
    CPO_RULE,
    DPO_RULE,
    KTO_RULE,
    ONLINE_RULE,
    ORPO_RULE,
    REWARD_RULE,
    SFT_RULE,
    LengthRule,
)
from planner.specs import Generation, LoraTargets, Method, PlanRequest, Tuning
from planner.trl_defaults import NUM_GENERATIONS, VLLM_METHODS

LORA_ALPHA_PER_RANK = 2
"""LoRA alpha = 2 × rank: the scaling alpha/r = 2 that TRL's and peft's examples use."""
LORA_DROPOUT = 0.05
"""LoRA dropout; live only in SFT (every other trainer here sets disable_dropout=True)."""


def lora_dropout(model_type: str, is_moe: bool, targets: LoraTargets) -> float:
    """The LoRA dropout a run is written with: LORA_DROPOUT, or 0 where peft 0.21 adapts a
    mixture of experts' stacked expert weights ("all-linear"): it wraps them in a ParamWrapper,
    which refuses any other dropout (peft/tuners/lora/layer.py)."""
    adapts_experts = model_type in SUPPORTED_TYPES and architecture(model_type).lora_adapts_experts
    if is_moe and targets is LoraTargets.all_linear and adapts_experts:
        return 0.0
    return LORA_DROPOUT


class StartingValue(BaseModel):
    """A hyper-parameter's first value and why it was chosen."""

    name: str
    value: float
    reason: str


@dataclass(frozen=True)
class Knob:
    """A TRL config field with the value this project starts from, and why."""

    name: str
    default: float
    reason: str


@dataclass(frozen=True)
class Recipe:
    method: Method
    trainer: str
    """The TRL trainer class, as `module:Name` (TRL 1.12 locations)."""
    config_class: str
    length_rule: LengthRule
    """What the trainer does with a row longer than its limit (planner.data_rules)."""
    trl_cli: bool
    """`trl <method> --config FILE` exists for it (trl/cli/commands/__init__.py, TRL 1.12)."""
    columns: tuple[str, ...]
    """The dataset columns TRL needs (SFT: see `sft_columns`)."""
    key_metrics: tuple[str, ...]
    """What the live view shows, and what a run's metrics.jsonl must hold."""
    training_signal: str
    """What to watch during training, in words."""
    first_knobs: str
    """The first hyper-parameters to tune, with their starting values."""
    kl: Knob | None = None
    """The KL (or odds-ratio / margin) weight, as its TRL field with the starting value."""
    reference: str = "never"
    """When a frozen reference is loaded: 'never', 'always' or 'when-kl' (only when kl > 0)."""
    reference_from_init_kwargs: bool = True
    """TRL builds the reference itself from `model_init_kwargs` (PPO's is built by the runner)."""
    precomputable_reference: bool = False
    """Reference log-probs can be computed once before training (offline data only)."""
    rows_per_sample: int = 1
    """Sequences the policy runs with gradients per micro-batch sample (DPO: chosen + rejected)."""
    no_grad_rows_per_sample: int = 0
    """Extra sequences the policy runs without gradients (KTO's mismatched KL batch)."""
    reward_model: bool = False
    value_model: bool = False
    generates: bool = False
    sequence_classifier: bool = False
    """The trained model scores sequences (reward training): no vocabulary logits."""
    logit_copies_16bit: float | Callable[[PlanRequest], float] | None = None
    """Vocabulary-wide 16-bit tensors the loss holds at its high point, per logit, when the
    logits stay 16-bit (DeepSpeed: accelerate makes no fp32 copy), the reference's logits not
    included (`Loop.logit_copies_16bit` adds them). Counted in traced steps of TRL 1.12's
    trainers (tests/test_trace_agreement.py); None: not traced, the fp32-copy count is used."""
    entropy_metric: bool = False
    """The loss logs the policy's entropy over the full logits, 128 rows at a time
    (trl.trainer.utils.entropy_from_logits): a chunk's log-softmax, its exp and their product."""
    rollout_chunk: int | None = None
    """PPO: TRL's `local_rollout_forward_batch_size` default, the rows generated at once."""
    disables_dropout: bool = True
    """TRL's config sets `disable_dropout=True` (every trainer here but SFT)."""
    extra_knobs: tuple[Knob, ...] = ()
    """Fixed TRL fields this project sets, with reasons (SimPO's loss, reward centring)."""
    notes: tuple[str, ...] = ()
    experimental: str | None = None
    """Where the trainer lives when it is outside TRL's stable API."""
    fields: Callable[[PlanRequest, int | None], dict[str, Any]] | None = field(
        default=None, repr=False
    )
    """The method's own TRL fields beyond the KL knob and extra knobs (lengths, PPO's loop)."""

    # ------------------------------------------------------------------ derived from the fields

    @property
    def num_generations(self) -> int | None:
        """Completions per prompt, TRL's default (GRPO 8, RLOO 2), None for methods that do not
        sample groups. Kept in `planner.trl_defaults`, where the request reads it as well."""
        return NUM_GENERATIONS.get(self.method.value)

    @property
    def supports_vllm(self) -> bool:
        """Its TRL config has `use_vllm` (GRPO, RLOO; kept in `planner.trl_defaults`, where the
        request reads it as well)."""
        return self.method.value in VLLM_METHODS

    def generates_in_process(self, request: PlanRequest) -> bool:
        """Rollouts run through transformers' `generate` in the training process, holding a KV
        cache and next-token logits there; vLLM's engine holds its own (`planner.vllm_engine`)."""
        return self.generates and request.generation is Generation.hf

    def kl_value(self, request: PlanRequest) -> float | None:
        """The KL weight the run uses: `--beta`, else the recipe's starting value."""
        if self.kl is None:
            return None
        return request.beta if request.beta is not None else self.kl.default

    def loads_reference(self, request: PlanRequest) -> bool:
        """A reference model is in memory at step time."""
        if self.reference == "never":
            return False
        if self.reference == "when-kl" and not self.kl_value(request):
            return False
        return not (self.precomputable_reference and request.precompute_ref_log_probs)

    def reference_kind(self, request: PlanRequest) -> str:
        """'none', 'copy' (a second frozen model) or 'adapter-disabled' (LoRA base, no copy)."""
        if not self.loads_reference(request):
            return "none"
        return "copy" if request.tuning is Tuning.full else "adapter-disabled"

    def can_precompute_reference(self, request: PlanRequest) -> bool:
        """Precomputing reference log-probs would free a reference copy now in memory."""
        return self.precomputable_reference and self.reference_kind(request) == "copy"

    def generation_chunk(self, request: PlanRequest) -> int:
        """Sequences generated (and scored) at once per GPU. GRPO/RLOO generate the whole local
        generation batch (micro-batch x steps_per_generation, which defaults to grad-accum);
        PPO generates its local batch in chunks of `local_rollout_forward_batch_size`."""
        rollout = request.rows_per_step(processes=1)
        if self.rollout_chunk is not None:
            return min(rollout, self.rollout_chunk)
        return rollout

    def length_limit(self, request: PlanRequest) -> int:
        """The tokens a row is measured against: the trainer's max_length (seq_len), or for
        methods that generate, the plan's prompt length (which TRL does not enforce)."""
        if self.generates:
            return request.prompt_and_completion()[0]
        return request.seq_len

    def learning_rate_for(self, tuning: Tuning) -> StartingValue:
        """The starting learning rate for this method and tuning (profiles/constants.toml)."""
        full, lora, source = learning_rate(self.method.value)
        if tuning is Tuning.full:
            return StartingValue(name="learning_rate", value=full, reason=source)
        return StartingValue(
            name="learning_rate",
            value=lora,
            reason=f"{source}; ×10 for LoRA adapters, which start at zero in a small subspace",
        )

    def trl_fields(
        self, request: PlanRequest, max_steps: int | None
    ) -> tuple[dict[str, Any], list[StartingValue]]:
        """The method's own TRL config fields and their starting values with reasons."""
        out: dict[str, Any] = {}
        values: list[StartingValue] = []
        if self.kl is not None:
            given = request.beta is not None
            value = self.kl_value(request)
            out[self.kl.name] = value
            reason = "given by --beta" if given else self.kl.reason
            values.append(StartingValue(name=self.kl.name, value=value, reason=reason))
        for knob in self.extra_knobs:
            out[knob.name] = knob.default
            values.append(StartingValue(name=knob.name, value=knob.default, reason=knob.reason))
        if self.precomputable_reference:
            out["precompute_ref_log_probs"] = request.precompute_ref_log_probs
        if self.num_generations is not None:
            out["num_generations"] = request.num_generations
        if self.fields is not None:
            out.update(self.fields(request, max_steps))
        return out, values

    def generation_group_problem(
        self, request: PlanRequest, processes: int | None = None
    ) -> str | None:
        """Why the generation batch cannot be split into whole groups of completions, or None.
        TRL requires the per-step batch (micro-batch × accumulation × processes) to be a multiple
        of num_generations (GRPOConfig / RLOOConfig validation)."""
        if self.num_generations is None or not request.num_generations:
            return None
        per_step = request.rows_per_step(processes)
        if per_step % request.num_generations == 0:
            return None
        return (
            f"{self.method.value}: the generation batch (batch-size × grad-accum × processes "
            f"= {per_step}) must be divisible by --num-generations {request.num_generations}"
        )

    def loop_notes(self, request: PlanRequest) -> list[str]:
        """What the plan says about this method's loop."""
        notes = list(self.notes)
        if self.num_generations is not None:
            notes.append(
                f"{self.method.value.upper()}: {request.num_generations} completions per prompt "
                "(num_generations); batch size counts completions"
            )
        if self.reference == "when-kl":
            beta = self.kl_value(request) or 0.0
            notes.append(
                f"reference model loaded only when {self.kl.name if self.kl else 'beta'} > 0"
                + (f" ({beta:g}: loaded)" if beta > 0 else " (0: none)")
            )
        if self.precomputable_reference and request.precompute_ref_log_probs:
            notes.append(
                "reference log-probs precomputed before training: no reference at step time"
            )
        if request.generation is Generation.vllm_colocate:
            notes.append(
                "completions generated by a vLLM engine in each training process, which holds "
                "its share of the GPU for the whole run (sleep mode off, TRL's default); no "
                "transformers KV cache in training memory"
            )
        elif request.generation is Generation.vllm_server:
            notes.append(
                "completions generated by a vLLM server on GPUs of its own (vllm_server.sh in "
                "the run folder starts it); no KV cache on the training GPUs"
            )
        if request.generation is not Generation.hf:
            notes.append(
                "vLLM rollout time: bandwidth-bound decoding as for transformers' generate, in "
                "the waves its KV cache allows; vLLM's own speed-up over generate is not assumed"
            )
        if self.rollout_chunk is not None:
            notes.append(
                f"rollouts generated {self.generation_chunk(request)} at a time "
                "(local_rollout_forward_batch_size)"
            )
        return notes


# ----------------------------------------------------------------------------- method fields


def _completion_share(request: PlanRequest) -> float:
    prompt, completion = request.prompt_and_completion()
    return completion / (prompt + completion)


def _lengths(request: PlanRequest, _: int | None) -> dict[str, Any]:
    return {"max_length": request.seq_len}


def _pair_lengths(request: PlanRequest, _: int | None) -> dict[str, Any]:
    _, completion = request.prompt_and_completion()
    return {"max_length": request.seq_len, "max_completion_length": completion}


def _completion_length(request: PlanRequest, _: int | None) -> dict[str, Any]:
    _, completion = request.prompt_and_completion()
    return {"max_completion_length": completion, "logging_steps": 1}


def _ppo_fields(request: PlanRequest, max_steps: int | None) -> dict[str, Any]:
    """PPO's loop as trl.experimental.ppo runs it: one mini-batch per update, rollouts
    generated in chunks of `local_rollout_forward_batch_size`, episodes counted in prompts."""
    _, completion = request.prompt_and_completion()
    out: dict[str, Any] = {
        "response_length": completion,
        "num_ppo_epochs": request.ppo_epochs,
        "num_mini_batches": 1,
        "local_rollout_forward_batch_size": RECIPES[Method.ppo].generation_chunk(request),
        "missing_eos_penalty": 1.0,
        "stop_token": "eos",
        "num_sample_generations": 0,
    }
    if max_steps is not None:
        out["total_episodes"] = max_steps * request.rows_per_step()
    return out


PREFERENCE_COLUMNS = ("chosen", "rejected")
PROMPT_COLUMNS = ("prompt",)

RECIPES: dict[Method, Recipe] = {
    Method.sft: Recipe(
        Method.sft,
        trainer="trl:SFTTrainer",
        length_rule=SFT_RULE,
        config_class="trl:SFTConfig",
        trl_cli=True,
        columns=("text",),
        key_metrics=("loss", "mean_token_accuracy"),
        training_signal="validation loss falls without the training loss diving below it",
        first_knobs=(
            "SFT's first knobs: learning rate and epochs; small demonstration sets overfit fast."
        ),
        disables_dropout=False,
        fields=_lengths,
    ),
    Method.dpo: Recipe(
        Method.dpo,
        trainer="trl:DPOTrainer",
        length_rule=DPO_RULE,
        config_class="trl:DPOConfig",
        trl_cli=True,
        columns=PREFERENCE_COLUMNS,
        key_metrics=("loss", "rewards/margins", "rewards/accuracies"),
        training_signal=(
            "rewards/margins and rewards/accuracies rise while logps/chosen does not collapse"
        ),
        first_knobs=(
            "DPO's β is the first knob: it sets how far the policy may move from the reference "
            "(higher stays closer; lower fits the preferences harder and risks drift and lost "
            "fluency). Start at {beta}, TRL's default, and sweep 0.05–0.5."
        ),
        kl=Knob("beta", 0.1, "TRL default and the DPO/KTO papers' value; lower drifts further"),
        reference="always",
        precomputable_reference=True,
        rows_per_sample=2,
        # The logits, the per-row log-softmax kept for backward (selective_log_softmax's
        # 16-bit branch) and the entropy metric's reshape copy of the shifted logits.
        logit_copies_16bit=3,
        entropy_metric=True,
        notes=("chosen and rejected run as one doubled batch (TRL concatenated_forward)",),
        fields=_lengths,
    ),
    Method.kto: Recipe(
        Method.kto,
        trainer="trl:KTOTrainer",
        length_rule=KTO_RULE,
        config_class="trl:KTOConfig",
        trl_cli=True,
        columns=("prompt", "completion", "label"),
        key_metrics=("loss", "kl", "rewards/chosen"),
        training_signal="the KL estimate stays small while desirable and undesirable rewards separate",
        first_knobs=(
            "KTO's first knobs: β ({beta} by default) and `desirable_weight`/`undesirable_weight`, "
            "set so that weight × count is about balanced between thumbs-up and thumbs-down."
        ),
        kl=Knob("beta", 0.1, "TRL default and the DPO/KTO papers' value; lower drifts further"),
        reference="always",
        precomputable_reference=True,
        no_grad_rows_per_sample=1,
        # The logits and the per-row log-softmax; then, after the entropy metric's copy is
        # freed, chosen and rejected rows copied out with index_select (one copy together)
        # while each set's completion tokens are copied out by a boolean mask.
        logit_copies_16bit=lambda request: 3 + _completion_share(request) / 2,
        entropy_metric=True,
        notes=("KTO's KL term runs a mismatched batch through policy and reference without grad",),
        fields=_lengths,
    ),
    Method.orpo: Recipe(
        Method.orpo,
        trainer="trl.experimental.orpo:ORPOTrainer",
        length_rule=ORPO_RULE,
        config_class="trl.experimental.orpo:ORPOConfig",
        trl_cli=False,
        columns=PREFERENCE_COLUMNS,
        key_metrics=("loss", "nll_loss", "log_odds_ratio"),
        training_signal="the SFT loss falls and the log-odds ratio of chosen over rejected rises",
        first_knobs=(
            "ORPO's first knob: β (λ in the paper, {beta} by default) weighs the odds-ratio term "
            "against the SFT loss."
        ),
        kl=Knob("beta", 0.1, "ORPO's λ for the odds-ratio term; paper uses 0.1"),
        rows_per_sample=2,
        # The logits, the per-row log-softmax, and the NLL's contiguous shifted copy of the
        # chosen half with its cross-entropy log-softmax (½ + ½).
        logit_copies_16bit=3,
        notes=("ORPO: chosen + rejected in one batch, odds-ratio term, no reference model",),
        experimental="ORPO lives in trl.experimental.orpo",
        fields=_pair_lengths,
    ),
    Method.simpo: Recipe(
        Method.simpo,
        trainer="trl.experimental.cpo:CPOTrainer",
        length_rule=CPO_RULE,
        config_class="trl.experimental.cpo:CPOConfig",
        trl_cli=False,
        columns=PREFERENCE_COLUMNS,
        key_metrics=("loss", "rewards/margins", "rewards/accuracies"),
        training_signal="reward margins approach simpo_gamma without the chosen log-probs collapsing",
        first_knobs=(
            "SimPO runs as `CPOConfig(loss_type='simpo', cpo_alpha=0)`; its first knobs are β "
            "(started at {beta}: TRL's 0.1 default is low for SimPO, the paper uses about "
            "2.0–2.5) and `simpo_gamma`, the target margin (started at {simpo_gamma})."
        ),
        kl=Knob("beta", 2.0, "SimPO paper: β 2.0–2.5 with length-normalised rewards"),
        rows_per_sample=2,
        # The logits and the per-row log-softmax (cpo_alpha=0: no NLL, no entropy metric).
        logit_copies_16bit=2,
        extra_knobs=(
            Knob("simpo_gamma", 1.0, "SimPO paper: γ/β ≈ 0.5"),
            Knob("cpo_alpha", 0.0, "SimPO has no behaviour-cloning term (CPOConfig docs)"),
        ),
        notes=("SimPO (CPO loss_type=simpo): length-normalised margin, no reference model",),
        experimental="SimPO runs through trl.experimental.cpo's CPOTrainer",
        fields=lambda request, steps: {**_pair_lengths(request, steps), "loss_type": "simpo"},
    ),
    Method.reward: Recipe(
        Method.reward,
        trainer="trl:RewardTrainer",
        length_rule=REWARD_RULE,
        config_class="trl:RewardConfig",
        trl_cli=True,
        columns=PREFERENCE_COLUMNS,
        key_metrics=("loss", "accuracy", "margin"),
        training_signal="accuracy on held-out pairs rises and the margin grows",
        first_knobs=(
            "The reward model's first knobs: learning rate and epochs (one epoch usually; more "
            "overfits the pairs)."
        ),
        rows_per_sample=2,
        sequence_classifier=True,
        extra_knobs=(
            Knob(
                "center_rewards_coefficient",
                0.01,
                "keeps rewards centred on zero (Eisenstein et al. 2023, TRL docs)",
            ),
        ),
        notes=("reward model: sequence classifier scoring chosen + rejected in one batch",),
        fields=_lengths,
    ),
    Method.grpo: Recipe(
        Method.grpo,
        trainer="trl:GRPOTrainer",
        length_rule=ONLINE_RULE,
        config_class="trl:GRPOConfig",
        trl_cli=True,
        columns=PROMPT_COLUMNS,
        key_metrics=("reward", "reward_std", "completions/mean_length"),
        training_signal="reward rises, reward_std stays above zero and completion lengths stay sane",
        first_knobs=(
            "GRPO's first knobs: `num_generations` ({num_generations} by default; the generation "
            "batch must divide by it) and `beta` ({beta} by default, so no reference model; "
            "0.01–0.04 if the policy drifts)."
        ),
        kl=Knob("beta", 0.0, "TRL GRPO default: no KL term, so no reference model in memory"),
        reference="when-kl",
        generates=True,
        fields=_completion_length,
    ),
    Method.rloo: Recipe(
        Method.rloo,
        trainer="trl:RLOOTrainer",
        length_rule=ONLINE_RULE,
        config_class="trl:RLOOConfig",
        trl_cli=True,
        columns=PROMPT_COLUMNS,
        key_metrics=("reward", "kl", "completions/mean_length"),
        training_signal="reward rises while the KL to the reference stays bounded",
        first_knobs=(
            "RLOO's first knobs: `beta` ({beta} by default keeps a KL reference) and "
            "`num_generations` ({num_generations} by default, TRL's; 4 gives a steadier "
            "leave-one-out baseline)."
        ),
        kl=Knob("beta", 0.05, "TRL RLOO default: a small KL to the reference keeps outputs fluent"),
        reference="when-kl",
        generates=True,
        fields=_completion_length,
    ),
    Method.ppo: Recipe(
        Method.ppo,
        trainer="trl.experimental.ppo:PPOTrainer",
        length_rule=ONLINE_RULE,
        config_class="trl.experimental.ppo:PPOConfig",
        trl_cli=False,
        columns=PROMPT_COLUMNS,
        key_metrics=("objective/rlhf_reward", "objective/kl", "loss/policy_avg"),
        training_signal="objective/rlhf_reward rises while objective/kl stays bounded",
        first_knobs=(
            "PPO's KL coefficient is the first knob: `kl_coef` starts at {kl_coef} (TRL 1.12's "
            "default); too low and the policy drifts or hacks the reward, too high and it barely "
            "moves. Watch objective/kl against objective/rlhf_reward; then cliprange (0.2) and "
            "num_ppo_epochs (4)."
        ),
        kl=Knob("kl_coef", 0.05, "TRL PPOConfig default; raise if KL grows fast"),
        reference="always",
        reference_from_init_kwargs=False,
        reward_model=True,
        value_model=True,
        generates=True,
        rollout_chunk=64,
        notes=(
            "PPO (trl.experimental.ppo, trl<=1.12): policy + value model trained together "
            "under one optimizer (and one DeepSpeed engine); frozen reference and reward model; "
            "rollouts generated with a KV cache",
            "TRL's PPO wraps only the policy in PEFT: the value model trains in full",
        ),
        experimental="PPO lives in trl.experimental.ppo (removed upstream in trl 1.13)",
        fields=_ppo_fields,
    ),
}


def recipe(method: Method | str) -> Recipe:
    """The recipe of `method`."""
    return RECIPES[Method(method)]


def first_knobs(method: Method | str) -> str:
    """The recipe's first-knobs advice with its starting values filled in."""
    r = recipe(method)
    values: dict[str, Any] = {k.name: f"{k.default:g}" for k in r.extra_knobs}
    if r.kl is not None:
        values[r.kl.name] = f"{r.kl.default:g}"
    values.setdefault("beta", "")
    values["num_generations"] = r.num_generations
    return r.first_knobs.format(**values)


def sft_columns(columns: list[str]) -> list[str]:
    """SFT accepts `messages`, `text`, or `prompt` + `completion` (TRL SFTTrainer docs)."""
    if "messages" in columns:
        return ["messages"]
    if "text" in columns:
        return ["text"]
    return ["prompt", "completion"]
