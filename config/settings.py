"""Atelier's one settings tree.

Every value comes from, in order of precedence: explicit keyword arguments, environment variables
prefixed ``ATELIER_`` (sections are joined with one underscore:
``ATELIER_QUEUE_MAX_RUNNING_PER_USER`` sets ``queue.max_running_per_user``), an optional TOML
file named by ``ATELIER_CONFIG``, and the defaults below.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.errors import ConfigError, looks_secret_name, mask_secrets, mask_url_passwords

DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg"
DEFAULT_API_BASE_URL = "https://discord.com/api/v10"
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: A Discord role id, the key of ``quota.role_multipliers``.
RoleId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]


class SecretUrl(SecretStr):
    """A URL whose password is a secret: ``str()``, ``repr()`` and JSON dumps show it with the
    password masked; ``get_secret_value()`` gives the real URL."""

    def _display(self) -> str:
        return mask_url_passwords(self.get_secret_value())


class _Section(BaseModel):
    # No setting means "forever" by infinity: a lease or window of inf overflows the first
    # timedelta made from it, so every number must be finite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DiscordSettings(_Section):
    """How the bot reaches Discord. Only the bot process needs these; worker hosts never do."""

    token: SecretStr | None = Field(
        default=None, description="Bot token. A secret: never logged, stored or echoed."
    )
    api_base_url: str = Field(default=DEFAULT_API_BASE_URL, description="REST API base URL.")
    gateway_url: str = Field(default=DEFAULT_GATEWAY_URL, description="Gateway websocket URL.")
    guild_id: int | None = Field(
        default=None, description="Sync slash commands to this guild only (instant), else globally."
    )


class GenerationSettings(_Section):
    """Bounds and defaults of every request option, and how models are loaded."""

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Torch device; auto picks CUDA when present."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Weights dtype; auto is float16 on CUDA, float32 on CPU."
    )
    allow_large_on_cpu: bool = Field(
        default=False, description="Permit loading a full-size model without a GPU (very slow)."
    )
    enabled_models: list[str] = Field(
        default_factory=list,
        description="Extra models users may pick with --model; the default is always allowed.",
    )
    max_loaded_models: int = Field(
        default=2,
        ge=1,
        description=(
            "Most models a worker keeps loaded; the least recently used one other than the "
            "default model is unloaded to make room."
        ),
    )
    fast_lora: str | None = Field(
        default=None,
        description="LoRA for fast mode; default is the preset's (LCM-LoRA for SDXL).",
    )
    single_file_config: str | None = Field(
        default=None,
        description=(
            "Diffusers config (local directory or hub id) for a single-file checkpoint; "
            "default: SDXL base's, from the hub cache."
        ),
    )
    default_mode: Literal["fast", "quality"] | None = Field(
        default=None, description="Mode when a request names none; default: the model preset's."
    )
    min_steps: int = Field(default=1, ge=1, description="Smallest --steps.")
    max_steps: int = Field(default=60, ge=1, description="Largest --steps.")
    min_guidance: float = Field(default=0.0, ge=0.0, description="Smallest --cfg.")
    max_guidance: float = Field(default=20.0, ge=0.0, description="Largest --cfg.")
    max_aspect_ratio: float = Field(
        default=4.0, ge=1.0, description="Largest allowed long side / short side for --ar."
    )
    max_jobs_per_prompt: int = Field(
        default=4, ge=1, description="Most jobs one prompt makes through {a, b} and --repeat."
    )
    max_repeat: int = Field(default=4, ge=1, description="Largest --repeat.")
    max_prompt_chars: int = Field(
        default=1500,
        ge=1,
        description=(
            "Longest prompt text, options included; also the longest negative prompt, remixed "
            "prompt or other text option."
        ),
    )
    vary_subtle_strength: float = Field(
        default=0.35, gt=0.0, le=1.0, description="img2img strength of Vary (Subtle)."
    )
    vary_strong_strength: float = Field(
        default=0.7, gt=0.0, le=1.0, description="img2img strength of Vary (Strong) and V1-V4."
    )
    upscale_subtle_strength: float = Field(
        default=0.2, gt=0.0, le=1.0, description="img2img strength of Upscale (Subtle), at 2x."
    )
    upscale_creative_strength: float = Field(
        default=0.45, gt=0.0, le=1.0, description="img2img strength of Upscale (Creative), at 2x."
    )
    max_output_pixels: int = Field(
        default=2048 * 2048,
        ge=1,
        description=(
            "Largest image an upscale may produce; `atelier upscale` and `vary` read files of "
            "at most four times this."
        ),
    )
    preview_every: int = Field(default=2, ge=1, description="Preview every N denoising steps.")
    vae_tiling_pixels: int = Field(
        default=1_600_000,
        ge=1,
        description="Decode with VAE tiling when an image has more pixels than this.",
    )
    attachment_limit_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest encoded image (Discord's limit)."
    )
    compile: bool = Field(default=False, description="torch.compile the UNet (GPU only).")

    @model_validator(mode="after")
    def _ordered(self) -> GenerationSettings:
        for low, high in (("min_steps", "max_steps"), ("min_guidance", "max_guidance")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} (ATELIER_GENERATION_{low.upper()}) is {getattr(self, low):g}, above "
                    f"{high} (ATELIER_GENERATION_{high.upper()}), {getattr(self, high):g}; "
                    f"{low} must not exceed {high}"
                )
        return self


class QueueSettings(_Section):
    """The job ledger's scheduling, leases and worker behaviour."""

    max_running_per_user: int = Field(
        default=2, ge=1, description="Jobs of one user running at once."
    )
    max_queued_per_user: int = Field(
        default=10, ge=1, description="Jobs of one user waiting; more are refused, uncharged."
    )
    new_jobs_per_window: int = Field(
        default=20,
        ge=0,
        description="New jobs one user may start per new_jobs_window_seconds, cancelled ones "
        "included (a token bucket); more are refused until it refills. 0 turns the limit off.",
    )
    new_jobs_window_seconds: float = Field(
        default=600.0, gt=0, description="The window of new_jobs_per_window."
    )
    new_jobs_burst: int = Field(
        default=5, ge=1, description="New jobs one user may start at once (the bucket's size)."
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed job returns to the queue if not renewed in this."
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker renews its lease."
    )
    reclaim_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often workers put expired leases back in the queue."
    )
    poll_seconds: float = Field(default=1.0, gt=0, description="Idle worker's longest wait.")
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts (failures or lost workers) before a job is dead."
    )
    retry_delay_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Wait before retrying a failed attempt; doubles with each attempt.",
    )
    progress_interval_seconds: float = Field(
        default=2.0, gt=0, description="A worker writes progress at most this often."
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="On SIGTERM, time to finish the current job before release."
    )
    max_releases: int = Field(
        default=5,
        ge=1,
        description="Times a stopping worker may give a job back (not counted as attempts) "
        "before the job is dead, refunded.",
    )
    job_time_limit_floor_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Least time a job (or batch) may run on a worker, loading its model "
        "included, before the watchdog stops it.",
    )
    job_time_limit_factor: float = Field(
        default=10.0,
        gt=0,
        description="A job's time limit is this times its reservation (a batch's: the sum), "
        "never less than job_time_limit_floor_seconds. Past it the attempt fails and is "
        "retried; a job that never finishes ends dead, refunded.",
    )
    job_stop_grace_seconds: float = Field(
        default=15.0,
        gt=0,
        description="After a job's time limit, how long its generator has to stop at a step; "
        "if it does not, it is hung: `atelier worker` exits with status 3 and the worker in "
        "`atelier run` stops claiming.",
    )
    batching: bool = Field(default=False, description="Batch compatible queued jobs in one call.")
    max_batch: int = Field(default=4, ge=1, description="Most jobs in one batched call.")
    run_worker_in_process: bool = Field(
        default=True,
        description="`atelier run` also runs one worker; off when workers run elsewhere.",
    )


class QuotaSettings(_Section):
    """GPU-second allowances over a rolling day."""

    user_daily_gpu_seconds: float = Field(
        default=600.0, ge=0, description="GPU-seconds per user per rolling window."
    )
    guild_daily_gpu_seconds: float | None = Field(
        default=None, ge=0, description="Optional GPU-seconds per guild per rolling window."
    )
    window_seconds: float = Field(
        default=86_400.0, gt=0, description="Length of the rolling quota window."
    )
    admin_override_max_gpu_seconds: float | None = Field(
        default=None,
        ge=0,
        description="The most a server admin may grant one member with /quota (the GPU is the "
        "operator's); unset: 3 times user_daily_gpu_seconds.",
    )

    @property
    def admin_override_ceiling(self) -> float:
        """The largest allowance /quota may set."""
        if self.admin_override_max_gpu_seconds is not None:
            return self.admin_override_max_gpu_seconds
        return 3 * self.user_daily_gpu_seconds

    role_multipliers: dict[RoleId, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description='Discord role id -> multiplier, e.g. {"123": 3.0}.'
    )
    estimate_seconds_per_unit: float = Field(
        default=0.035,
        gt=0,
        description="GPU-seconds per unit of work (one sampler step on one megapixel, one "
        "guidance pass) until a kind of work has measured rates; a job reserves its units "
        "times the measured rate, and never less than the floors below.",
    )
    estimate_fast_seconds: float = Field(
        default=2.0, gt=0, description="Least reserved per fast grid or variation."
    )
    estimate_quality_seconds: float = Field(
        default=10.0, gt=0, description="Least reserved per quality grid or variation."
    )
    estimate_followup_seconds: float = Field(
        default=1.0, ge=0, description="Least reserved per upscale."
    )


class BotSettings(_Section):
    """Discord-facing behaviour."""

    progress_interval_seconds: float = Field(
        default=2.0, gt=0, description="Edit a running job's message at most this often."
    )
    delivery_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="First wait before retrying a result Discord did not take for a passing "
        "reason (429, 5xx, no answer); it doubles per attempt, with jitter.",
    )
    delivery_retry_max_seconds: float = Field(
        default=900.0, gt=0, description="Longest wait between two tries of one result."
    )
    delivery_claim_seconds: float = Field(
        default=120.0,
        ge=1,
        le=3600,
        description="How long a bot process's claim on posting one result lasts: another "
        "process (or this one, restarted after a crash) takes the result over after that. "
        "Longer than the slowest upload of a result.",
    )
    delivery_max_attempts: int = Field(
        default=12,
        ge=1,
        le=1000,
        description="Tries of one result before its delivery is given up, when every try met "
        "a passing failure. A lasting refusal (403, 404) gives up at once, after the fallbacks.",
    )
    invalid_request_budget: int = Field(
        default=1000,
        ge=1,
        le=5000,
        description="Invalid answers (401, 403, 429) the bot may receive per 10 minutes; at "
        "this many it stops deliveries and progress edits until the window frees. Discord bans "
        "the IP at 10,000.",
    )
    edits_per_channel_per_5s: int = Field(
        default=3,
        ge=0,
        description="Most progress and position edits in one channel in any 5 s. Discord allows "
        "about 5, and discord.py stalls every request once one reaches 0, so 3 leaves room for a "
        "result. Due messages over it wait for a later pass, most behind first. 0: no limit.",
    )
    edits_per_second: int = Field(
        default=25,
        ge=0,
        description="Most progress and position edits a second in all channels (Discord allows "
        "50 requests a second in all; the rest is left for answers and results). 0: no limit.",
    )
    owner_only_buttons: bool = Field(
        default=True, description="Default for guilds that have not chosen who may click."
    )
    banned_terms: list[str] = Field(
        default_factory=list,
        description=(
            "Terms refused in prompts in every server (JSON list); moderators add their own "
            "with /filter."
        ),
    )
    max_banned_terms: int = Field(
        default=200, ge=0, description="Most terms one server's moderators may add with /filter."
    )
    appeal_days: float = Field(
        default=14.0,
        ge=0,
        description="How long a blocked job's images are kept (never shown) for an appeal "
        "before they are deleted.",
    )
    search_results_hours: float = Field(
        default=24.0,
        gt=0,
        le=720,
        description="How long a /search keeps answering its page buttons (the query is stored "
        "server-side until then, then deleted by retention).",
    )
    saved_searches_per_member: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Most stored /search queries one member keeps; a new search drops their "
        "oldest.",
    )
    session_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="The group sessions' loop sleeps until the next timer is due, or this long "
        "at most (it notices finished entries and owed boards then).",
    )


class RetentionSettings(_Section):
    """How long finished jobs' images and rows, and the moderation audit log, are kept (0 keeps
    them forever). Retention never touches a job that is waiting, running, not yet delivered or
    held (see the README)."""

    images_days: float = Field(
        default=30.0,
        ge=0,
        description="Days a finished, delivered job's images are kept; then they are deleted and "
        "/show says they expired. 0 keeps them forever.",
    )
    rows_days: float = Field(
        default=180.0,
        ge=0,
        description="Days a finished, delivered job's row (and its delivery record and quota "
        "ledger lines, once outside the quota window) is kept; then it is deleted with any "
        "images left. 0 keeps them forever.",
    )
    modlog_days: float = Field(
        default=365.0,
        ge=0,
        description="Days a row of the moderation audit log (/modlog, atelier modlog export) is "
        "kept; then it is deleted. 0 keeps them forever.",
    )
    sessions_days: float = Field(
        default=90.0,
        ge=0,
        description="Days an ended group session's rounds, entries, votes and results are kept; "
        "then they are deleted (its entries' jobs stay, as any job). 0 keeps them forever.",
    )


class WebSettings(_Section):
    """The read-only web gallery (``atelier web``, or with ``atelier run`` when enabled). It
    shows only servers whose admins turned it on, and only their public jobs."""

    enabled: bool = Field(
        default=False,
        description="Serve the web gallery from `atelier run` too (`atelier web` serves it "
        "alone either way).",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to listen on (0.0.0.0: every interface; put a TLS proxy in front).",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    public_base_url: str | None = Field(
        default=None,
        description="The gallery's address as visitors reach it (e.g. behind a proxy: "
        "https://gallery.example.org); unset: http://host:port.",
    )
    thumbnail_cache_mb: int = Field(
        default=256,
        ge=1,
        le=1_000_000,
        description="Most megabytes of WebP thumbnails and images kept on disk "
        "(<data dir>/web-cache); the least recently served go first.",
    )
    thumbnail_px: int = Field(
        default=384, ge=64, le=1024, description="Longest side of a gallery thumbnail."
    )
    image_px: int = Field(
        default=1536, ge=256, le=4096, description="Longest side of an image page's picture."
    )
    image_max_age_seconds: int = Field(
        default=3600,
        ge=0,
        le=31_536_000,
        description="How long browsers may reuse a thumbnail or image without asking again "
        "(Cache-Control max-age); a job made private later may stay in a browser that long.",
    )
    page_size: int = Field(
        default=9, ge=4, le=9, description="Jobs on one gallery, search or member page."
    )

    @field_validator("public_base_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                "must be an http:// or https:// URL such as https://gallery.example.org"
            )
        return value.rstrip("/")

    @property
    def base_url(self) -> str:
        """Where visitors reach the gallery, without a trailing slash."""
        if self.public_base_url is not None:
            return self.public_base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


#: A classifier's label as the model's config names it (``id2label``), e.g. ``nsfw``.
ClassifierLabel = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
#: A probability a label's score is compared with: finite, from 0 to 1.
Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
KEYWORD_CLASSIFIER_PREFIX = "keyword:"


class ModerationSettings(_Section):
    """The output image classifier, run by the worker on every result before it is stored.

    Off unless ``classifier_model`` is set. A result's scores are compared with the strict
    thresholds, or with the loose ones in age-restricted channels (marked by an admin, or
    Discord's own NSFW flag).
    """

    classifier_model: str | None = Field(
        default=None,
        description="Image classifier run on every result: a hub id (e.g. an NSFW detector), a "
        "local transformers directory, `tiny` (random weights, for tests) or `keyword:<word>` "
        "(flags jobs whose prompt has the word; for tests). Unset: no classifier.",
    )
    classifier_labels: list[ClassifierLabel] = Field(
        default_factory=lambda: ["nsfw"],
        description="The classifier's labels that count (JSON list); each needs a threshold.",
    )
    classifier_thresholds: dict[ClassifierLabel, Threshold] = Field(
        default_factory=lambda: {"nsfw": 0.5},
        description="Label -> the score (0 to 1) at or above which an image is flagged, in "
        "every channel that is not age-restricted and in DMs.",
    )
    classifier_loose_thresholds: dict[ClassifierLabel, Threshold] = Field(
        default_factory=dict,
        description="Label -> threshold in age-restricted channels, at least the strict one; "
        "a label not listed keeps its strict threshold there.",
    )

    hold_days: float = Field(
        default=7.0,
        gt=0,
        le=365,
        description="A held result no moderator decides within this many days counts as "
        "rejected (refunded, logged).",
    )
    reports_per_hour: int = Field(
        default=5, ge=1, le=100, description="Most reports one member may send per hour."
    )
    review_claim_seconds: float = Field(
        default=300.0,
        ge=10,
        le=3600,
        description="How long a moderator who opened an item's Reject form holds it: no other "
        "moderator may decide it meanwhile.",
    )
    reject_ban_hours: float = Field(
        default=168.0,
        gt=0,
        le=87600,
        description="How long 'Reject and ban' bans the owner from Atelier in that server.",
    )

    @field_validator("classifier_model", mode="before")
    @classmethod
    def _empty_model_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("classifier_model")
    @classmethod
    def _keyword_has_a_word(cls, value: str | None) -> str | None:
        if value is None or not value.startswith(KEYWORD_CLASSIFIER_PREFIX):
            return value
        if not value.removeprefix(KEYWORD_CLASSIFIER_PREFIX).strip():
            # Phrased without "keyword:" and a word after it: error messages mask any
            # "key...: value" pair as a possible secret.
            raise ValueError("a keyword classifier needs its word after the colon")
        return value

    @model_validator(mode="after")
    def _thresholds_match_labels(self) -> ModerationSettings:
        labels = self.classifier_labels
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                f"classifier_labels (ATELIER_MODERATION_CLASSIFIER_LABELS) lists "
                f"{', '.join(map(repr, repeated))} more than once"
            )
        if self.classifier_model is not None and not labels:
            raise ValueError(
                "classifier_labels (ATELIER_MODERATION_CLASSIFIER_LABELS) is empty, so the "
                "classifier could flag nothing: name at least one label, or unset "
                "classifier_model"
            )
        for setting, thresholds in (
            ("classifier_thresholds", self.classifier_thresholds),
            ("classifier_loose_thresholds", self.classifier_loose_thresholds),
        ):
            unknown = sorted(set(thresholds) - set(labels))
            if unknown:
                raise ValueError(
                    f"{setting} (ATELIER_MODERATION_{setting.upper()}) has a threshold for "
                    f"{', '.join(map(repr, unknown))}, which classifier_labels does not list "
                    f"({', '.join(map(repr, labels)) or 'none'})"
                )
        missing = [label for label in labels if label not in self.classifier_thresholds]
        if missing:
            raise ValueError(
                "classifier_thresholds (ATELIER_MODERATION_CLASSIFIER_THRESHOLDS) has no "
                f"threshold for {', '.join(map(repr, missing))}; every label in "
                "classifier_labels needs one"
            )
        for label, loose in self.classifier_loose_thresholds.items():
            strict = self.classifier_thresholds[label]
            if loose < strict:
                raise ValueError(
                    f"classifier_loose_thresholds (ATELIER_MODERATION_CLASSIFIER_LOOSE_THRESHOLDS)"
                    f" for {label!r} is {loose:g}, below its strict threshold {strict:g}; "
                    "age-restricted channels may only be looser (a higher threshold)"
                )
        return self

    @property
    def classifier_enabled(self) -> bool:
        return self.classifier_model is not None


class Settings(BaseSettings):
    """All of Atelier's configuration. See the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix="ATELIER_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default=Path("data"), description="Models, images and the SQLite file.")
    database_url: SecretUrl | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL; default sqlite+aiosqlite in the data dir. A secret: its password "
            "is masked wherever the URL is shown."
        ),
    )
    model: str = Field(
        default="sdxl",
        description="Preset (sdxl, sdxl-lcm, tiny), hub id, directory or .safetensors.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log verbosity. The token is never logged at any level."
    )
    discord: DiscordSettings = DiscordSettings()
    generation: GenerationSettings = GenerationSettings()
    queue: QueueSettings = QueueSettings()
    quota: QuotaSettings = QuotaSettings()
    bot: BotSettings = BotSettings()
    retention: RetentionSettings = RetentionSettings()
    moderation: ModerationSettings = ModerationSettings()
    web: WebSettings = WebSettings()

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _url_has_a_scheme(cls, value: SecretUrl | None) -> SecretUrl | None:
        if value is not None and not _URL_SCHEME.match(value.get_secret_value()):
            raise ValueError(
                "must be an SQLAlchemy URL such as sqlite+aiosqlite:///path/atelier.db or "
                "postgresql+asyncpg://host/atelier"
            )
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL with its password, for storage only: never log or print it."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'atelier.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("ATELIER_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def _describe(error: ErrorDetails) -> str:
    names, entry = _setting_path([str(part) for part in error["loc"]])
    loc = ".".join(names)
    env = "ATELIER_" + "_".join(names).upper()
    msg = error["msg"]
    ctx = error.get("ctx") or {}
    expected = ctx.get("expected")
    if expected and str(expected) not in msg:
        msg = f"{msg} (allowed: {expected})"
    # An entry of a list or mapping is named apart: "quota.role_multipliers.1" would read as
    # one token-like run and be masked, and ATELIER_QUOTA_ROLE_MULTIPLIERS_1 is no variable.
    where = ""
    if entry[-1:] == ["[key]"]:
        where = f", key {'.'.join(entry[:-1])!r}"
    elif entry:
        where = f", entry {'.'.join(entry)!r}"
    return f"setting {loc} ({env}){where}: {msg}{_shown_input(error)}"


def _setting_path(loc: Sequence[str]) -> tuple[list[str], list[str]]:
    """``loc`` split into the setting's name (sections and field) and the entry within its value
    (a list index or mapping key); an unknown name is kept whole."""
    model: type[BaseModel] = Settings
    for index, part in enumerate(loc):
        field = model.model_fields.get(part)
        if field is None:
            return list(loc), []
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return list(loc[: index + 1]), list(loc[index + 1 :])
        model = annotation
    return list(loc), []


def _shown_input(error: Any) -> str:
    """``; got <value>`` when the bad value helps the operator and cannot be a secret.

    Never shown: the value of an unknown setting (it may be a misspelt secret), of a secret
    setting or one whose name says secret, and sections or lists (they may hold either). Any
    other value is shown with URL passwords and token-like strings masked.
    """
    names = [str(part) for part in error["loc"]]
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return " (unknown setting: check its spelling; its value is not shown)"
    if _is_secret_setting(names) or any(looks_secret_name(name) for name in names):
        return ""
    if not isinstance(value, str | int | float | bool):
        return ""
    return f"; got {mask_secrets(repr(value))}"


def _is_secret_setting(loc: Sequence[str]) -> bool:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if "Secret" in str(annotation):
            return True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return False


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation failures into one readable ConfigError."""
    toml_path = os.environ.get("ATELIER_CONFIG")
    if toml_path and not Path(toml_path).is_file():
        raise ConfigError(f"ATELIER_CONFIG names {toml_path!r}, which is not a readable file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # malformed TOML or env JSON
        lines = _unparsable_variables() or [str(exc)]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _unparsable_variables() -> list[str]:
    """One line for each ATELIER_ variable of a section, list or mapping whose value is not
    JSON (pydantic-settings names only the section). Values are not shown: one may be a secret."""
    environ = {name.upper(): value for name, value in os.environ.items()}
    lines = []
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        candidates = [(section, f"ATELIER_{section.upper()}", "a JSON object")]
        for name, field in model.model_fields.items():
            origin = get_origin(field.annotation)
            kind = "a JSON list" if origin is list else "a JSON object" if origin is dict else ""
            if kind:
                candidates.append((f"{section}.{name}", f"ATELIER_{section}_{name}".upper(), kind))
        for setting, env, kind in candidates:
            raw = environ.get(env)
            if raw is None:
                continue
            try:
                json.loads(raw)
            except ValueError:
                lines.append(f"setting {setting} ({env}): must be {kind}; its value is not JSON")
    return lines
