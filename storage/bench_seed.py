"""A realistic sharing dataset for ``atelier bench gallery``: jobs, likes and deliveries.

Deterministic (one seeded RNG): the same ``jobs`` and ``seed`` give the same rows. Prompts are
5 to 25 words drawn with a Zipf-like skew from word lists (subjects, styles, lighting, media,
artist-like style words), some with a quoted phrase. Owners are ``members`` members of whom a
few make most jobs; ``created_at`` spreads over 90 days (``seq`` follows it, as in life); most
jobs are public, about 10% stealth, and a few percent blocked, held for review, failed or
deleted by their owner (as ``SharingStore.delete_job`` leaves them: no prompt, no refs, no
likes). Like counts are long-tailed and every like is a ``likes`` row: ``jobs.like_count`` is
set from them, so the two agree exactly. Posted jobs have a ``deliveries`` row with a message id
(the gallery joins it). Rows are inserted in chunks of ``CHUNK`` per executemany; on SQLite the
FTS5 triggers index each prompt as it is inserted, on PostgreSQL the generated tsvector column
does. ``ANALYZE`` runs at the end (PostgreSQL: ``VACUUM ANALYZE``, which also flushes the GIN
index's pending list as autovacuum would).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import DELIVERIES, JOBS, LIKES
from storage.sql import utc_now
from storage.types import (
    ALPHABET,
    HoldState,
    JobKind,
    JobStatus,
    Visibility,
    snowflake_at,
)

#: Rows per executemany: big enough to amortise round trips, small enough for SQLite's and
#: asyncpg's parameter limits through SQLAlchemy's insertmanyvalues batching.
CHUNK = 4000
#: The server the bench measures, and two smaller neighbours sharing the tables.
GUILD_ID = 910_000_000_000_000_001
OTHER_GUILDS = (910_000_000_000_000_002, 910_000_000_000_000_003)
#: Member ids far from real snowflakes, so bench rows are easy to recognise.
MEMBER_BASE = 920_000_000_000_000_000
CHANNELS = tuple(930_000_000_000_000_000 + n for n in range(6))
DAYS = 90

SUBJECTS = (
    "castle", "lighthouse", "cat", "dragon", "forest", "city", "portrait", "robot", "garden",
    "mountain", "ocean", "astronaut", "library", "fox", "owl", "knight", "witch", "temple",
    "village", "desert", "spaceship", "waterfall", "market", "train", "bridge", "harbor",
    "cathedral", "samurai", "mermaid", "tiger", "wolf", "whale", "island", "street", "cafe",
    "greenhouse", "volcano", "glacier", "canyon", "meadow", "skyline", "ruins", "tower",
    "airship", "submarine", "orchard", "lantern", "phoenix", "golem", "unicorn", "bear",
    "rabbit", "deer", "horse", "raven", "octopus", "jellyfish", "butterfly", "beetle", "koi",
    "heron", "penguin", "elephant", "giraffe", "lion", "panda", "frog", "snail", "moth",
    "wizard", "pirate", "detective", "dancer", "monk", "queen", "king", "princess", "soldier",
    "farmer", "fisherman", "painter", "musician", "scientist", "child", "grandmother",
    "cyborg", "android", "alien", "ghost", "vampire", "angel", "demon", "giant", "dwarf",
    "elf", "goblin", "troll", "fairy", "nymph", "centaur", "minotaur", "kraken", "hydra",
    "sphinx", "griffin", "pegasus", "chimera", "basilisk", "cottage", "windmill", "barn",
    "pagoda", "mosque", "pyramid", "colosseum", "skyscraper", "subway", "alley",
    "rooftop", "balcony", "staircase", "corridor", "attic", "cellar", "kitchen", "bedroom",
    "bathhouse", "theater", "museum", "observatory", "laboratory", "factory", "shipyard",
    "lagoon", "reef", "swamp", "jungle", "tundra", "savanna", "prairie", "fjord", "cliff",
    "cave", "grotto", "oasis", "dune", "crater", "nebula", "galaxy", "planet", "moon",
    "comet", "asteroid", "satellite", "rocket", "tram", "bicycle", "motorcycle", "car",
    "truck", "sailboat", "gondola", "zeppelin", "balloon", "kite", "umbrella", "teapot",
    "clock", "mirror", "book", "violin", "piano", "guitar", "chessboard", "crown", "sword",
    "shield", "helmet", "mask", "throne", "chalice", "compass", "map", "key", "door",
    "window", "fountain", "statue", "lamp", "candle", "flower", "rose", "sunflower", "tulip",
    "lotus", "cactus", "mushroom", "oak", "willow", "bamboo", "bonsai", "vineyard",
)  # fmt: skip
ADJECTIVES = (
    "ancient", "floating", "ruined", "tiny", "giant", "abandoned", "glowing", "misty",
    "futuristic", "cozy", "haunted", "crystal", "overgrown", "frozen", "burning", "quiet",
    "busy", "mechanical", "enchanted", "lonely", "colorful", "dark", "sunlit", "rainy",
)  # fmt: skip
STYLES = (
    "watercolor", "oil painting", "digital art", "concept art", "photograph", "illustration",
    "pixel art", "3d render", "ink sketch", "charcoal drawing", "pastel", "gouache",
    "ukiyo-e", "art nouveau", "art deco", "impressionist", "surreal", "minimalist",
    "baroque", "cyberpunk", "steampunk", "vaporwave", "low poly", "isometric", "anime",
    "studio ghibli style", "film still", "matte painting", "linocut", "stained glass",
)  # fmt: skip
LIGHTING = (
    "golden hour", "soft light", "volumetric light", "rim lighting", "neon lights",
    "moonlight", "candlelight", "dramatic lighting", "backlit", "overcast", "sunset",
    "sunrise", "blue hour", "studio lighting", "god rays", "bioluminescent glow",
)  # fmt: skip
DETAILS = (
    "highly detailed", "intricate", "sharp focus", "bokeh", "wide angle", "close up",
    "cinematic", "8k", "trending", "masterpiece", "depth of field", "symmetrical",
    "dynamic pose", "rule of thirds", "vibrant colors", "muted palette", "film grain",
    "long exposure", "aerial view", "macro", "fog", "reflections", "rain", "snow",
)  # fmt: skip
ARTISTS = (
    "in the style of moebius", "after hokusai", "like a vermeer", "in the manner of turner",
    "inspired by mucha", "like a rembrandt", "after monet", "in the style of klimt",
    "like a hopper painting", "after van gogh", "in the style of escher", "after magritte",
)  # fmt: skip
#: Phrases a prompt sometimes carries in quotes (searched as phrases by the bench).
QUOTED = (
    "golden hour", "neon lights", "stained glass", "art nouveau", "blue hour",
    "oil painting", "depth of field", "studio ghibli style", "film grain", "god rays",
)  # fmt: skip
MODELS = ("sdxl-base", "sdxl-turbo", "playground-v2", "juggernaut-xl", "dreamshaper-xl")
MODEL_WEIGHTS = (50, 20, 10, 12, 8)
ASPECTS = ("1:1", "3:2", "2:3", "16:9", "9:16", "4:3")
ASPECT_WEIGHTS = (45, 15, 12, 14, 8, 6)
MODES = ("fast", "quality")
#: A handful of image files every seeded job points at (the bench never reads them).
IMAGE_REFS = tuple(f"bench/{n}.png" for n in range(8))


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (rank + 1) ** s for rank in range(n)]


@dataclass(frozen=True)
class SeedReport:
    """What ``seed_gallery`` inserted, and how long it took."""

    jobs: int
    likes: int
    deliveries: int
    members: int
    guild_id: int
    #: Jobs of ``guild_id`` an anonymous viewer may find (public, succeeded, not hidden).
    public_jobs: int
    seconds: float
    now: datetime


class PromptMaker:
    """Deterministic prompts: ``make()`` gives the next one."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._pools = [
            (SUBJECTS, _zipf(len(SUBJECTS), 0.6)),
            (ADJECTIVES, _zipf(len(ADJECTIVES), 0.7)),
            (STYLES, _zipf(len(STYLES), 0.9)),
            (LIGHTING, _zipf(len(LIGHTING), 0.9)),
            (DETAILS, _zipf(len(DETAILS), 0.8)),
            (ARTISTS, _zipf(len(ARTISTS), 0.6)),
        ]

    def _pick(self, pool: int) -> str:
        words, weights = self._pools[pool]
        return self.rng.choices(words, weights)[0]

    def make(self) -> str:
        rng = self.rng
        parts = [f"a {self._pick(1)} {self._pick(0)}"]
        if rng.random() < 0.4:
            parts.append(f"with a {self._pick(0)}")
        target = rng.randint(5, 25)
        words = sum(len(p.split()) for p in parts)
        while words < target:
            pool = rng.choices((0, 1, 2, 3, 4, 5), (2, 4, 10, 8, 12, 2))[0]
            part = self._pick(pool)
            if pool == 2 and rng.random() < 0.15:
                part = f'"{rng.choice(QUOTED)}"'
            if len(part.split()) + words > 25:
                break
            parts.append(part)
            words += len(part.split())
        return ", ".join(parts)


class _Ids:
    """Unique 12-character job ids in the real alphabet, from the RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def next(self) -> str:
        while True:
            bits = self.rng.getrandbits(60)
            job_id = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(12))
            if job_id not in self.seen:
                self.seen.add(job_id)
                return job_id


def _like_count(rng: random.Random, members: int) -> int:
    """Long-tailed: most jobs have none, a few have hundreds."""
    if rng.random() < 0.6:
        return 0
    return min(members - 1, int(rng.paretovariate(1.3)))


async def seed_gallery(
    db: Database,
    jobs: int = 100_000,
    *,
    members: int = 2_000,
    seed: int = 12,
    now: datetime | None = None,
) -> SeedReport:
    """Insert ``jobs`` jobs with their likes and deliveries (see the module). The database must
    hold no jobs (ValueError otherwise): the bench deletes what it seeded with ``clear_gallery``.
    """
    if jobs < 1 or members < 2:
        raise ValueError("the gallery bench needs at least one job and two members")
    if await _count(db, JOBS):
        raise ValueError("the gallery bench needs an empty scratch database (it has jobs)")
    started = time.perf_counter()
    now = now or utc_now()
    rng = random.Random(seed)
    prompts = PromptMaker(rng)
    ids = _Ids(rng)
    member_weights = _zipf(members, 1.1)
    member_ids = [MEMBER_BASE + n for n in range(members)]
    span = DAYS * 86_400
    # Sorted, so seq (insertion order) follows created_at as it does in life.
    offsets = sorted(rng.random() * span for _ in range(jobs))
    job_rows: list[dict[str, Any]] = []
    like_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    public = 0
    recent_by_guild: dict[int, list[str]] = {}
    for n, offset in enumerate(offsets):
        created = now - timedelta(seconds=span - offset)
        row, delivery, likers = _job(
            rng, prompts, ids.next(), created, now, member_ids, member_weights, recent_by_guild
        )
        job_rows.append(row)
        if delivery is not None:
            delivery_rows.append(delivery | {"message_id": snowflake_at(created) + n})
        for user_id in likers:
            liked_at = created + (now - created) * rng.random()
            like_rows.append({"job_id": row["id"], "user_id": user_id, "created_at": liked_at})
        if (
            row["guild_id"] == GUILD_ID
            and row["status"] == JobStatus.SUCCEEDED.value
            and row["visibility"] == Visibility.PUBLIC.value
            and row["deleted_at"] is None
            and (delivery is None or delivery["review"] != HoldState.HELD.value)
        ):
            public += 1
    for table, rows in ((JOBS, job_rows), (DELIVERIES, delivery_rows), (LIKES, like_rows)):
        for start in range(0, len(rows), CHUNK):
            await _insert(db, table, rows[start : start + CHUNK])
    await analyze(db)
    return SeedReport(
        jobs=len(job_rows),
        likes=len(like_rows),
        deliveries=len(delivery_rows),
        members=members,
        guild_id=GUILD_ID,
        public_jobs=public,
        seconds=time.perf_counter() - started,
        now=now,
    )


def _job(
    rng: random.Random,
    prompts: PromptMaker,
    job_id: str,
    created: datetime,
    now: datetime,
    member_ids: list[int],
    member_weights: list[float],
    recent_by_guild: dict[int, list[str]],
) -> tuple[dict[str, Any], dict[str, Any] | None, list[int]]:
    """One job row, its delivery row (None: never posted) and the members who like it."""
    guild = GUILD_ID if rng.random() < 0.9 else rng.choice(OTHER_GUILDS)
    owner = rng.choices(member_ids, member_weights)[0]
    prompt = prompts.make()
    model = rng.choices(MODELS, MODEL_WEIGHTS)[0]
    aspect = rng.choices(ASPECTS, ASPECT_WEIGHTS)[0]
    mode = MODES[0] if rng.random() < 0.7 else MODES[1]
    roll = rng.random()
    status = JobStatus.SUCCEEDED
    if roll < 0.03:
        status = JobStatus.BLOCKED if roll < 0.02 else JobStatus.FAILED
    recent = recent_by_guild.setdefault(guild, [])
    kind, parent = JobKind.IMAGINE, None
    if recent and rng.random() < 0.2:
        kind = rng.choice((JobKind.UPSCALE, JobKind.VARIATION, JobKind.REROLL))
        parent = rng.choice(recent)
    recent.append(job_id)
    del recent[:-50]
    succeeded = status is JobStatus.SUCCEEDED
    deleted = succeeded and rng.random() < 0.02
    held = succeeded and not deleted and rng.random() < 0.02
    stealth = rng.random() < 0.1
    gpu_ms = rng.randint(2_000, 30_000)
    refs = [*rng.sample(IMAGE_REFS, 4), "bench/grid.png"] if succeeded and not deleted else []
    likers: list[int] = []
    if succeeded and not deleted and not held:
        count = _like_count(rng, len(member_ids))
        likers = rng.sample(member_ids, count) if count else []
    finished = created + timedelta(milliseconds=gpu_ms + 500)
    row: dict[str, Any] = {
        "id": job_id,
        "kind": kind.value,
        "parent_id": parent,
        "owner_id": owner,
        "guild_id": guild,
        "channel_id": rng.choice(CHANNELS),
        "request": {"prompt": prompt, "model": model, "aspect": aspect, "mode": mode},
        "mode": mode,
        "batch_key": "",
        "priority": 0,
        "status": status.value,
        "attempts": 1,
        "max_attempts": 3,
        "available_at": created,
        "cancel_requested": False,
        "created_at": created,
        "started_at": created,
        "finished_at": finished,
        "estimated_ms": gpu_ms,
        "reserved_ms": 0,
        "gpu_ms": gpu_ms,
        "charged_ms": gpu_ms,
        "result_refs": refs,
        "error": "invalid request" if status is JobStatus.FAILED else None,
        "work_units": 32.0,
        "purge_after": now + timedelta(days=30) if status is JobStatus.BLOCKED else None,
        "order_key": snowflake_at(created),
        "releases": 0,
        "age_restricted": False,
        "visibility": (Visibility.STEALTH if stealth else Visibility.PUBLIC).value,
        "deleted_at": finished + timedelta(hours=1) if deleted else None,
        "like_count": len(likers),
        "published_at": finished if len(likers) >= 25 else None,
        "prompt": "" if deleted else prompt,
        "model": model,
        "aspect": aspect,
    }
    delivery = None
    if status is not JobStatus.FAILED:
        delivery = {
            "job_id": job_id,
            "channel_id": row["channel_id"],
            "posted_at": finished,
            "post_attempts": 1,
            "updated_at": finished,
            "review": HoldState.HELD.value if held else None,
        }
    return row, delivery, likers


async def _insert(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(insert(table), rows)

    await db.write(work)


async def analyze(db: Database) -> None:
    """Fresh planner statistics (what a live database has from autovacuum or ``optimize``)."""
    if db.is_sqlite:

        async def work(session: AsyncSession) -> None:
            await session.execute(text("ANALYZE"))

        await db.write(work)
        return
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE jobs"))
        await conn.execute(text("VACUUM ANALYZE likes"))
        await conn.execute(text("VACUUM ANALYZE deliveries"))


async def clear_gallery(db: Database) -> None:
    """Delete everything ``seed_gallery`` inserted (the database was empty before it)."""

    async def work(session: AsyncSession) -> None:
        for table in (LIKES, DELIVERIES, JOBS):
            await session.execute(delete(table))

    await db.write(work)


async def _count(db: Database, table: Any) -> int:
    async def work(session: AsyncSession) -> int:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())

    return await db.read(work)
