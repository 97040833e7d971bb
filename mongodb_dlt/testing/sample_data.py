"""A deterministic sample data set in the shape of MongoDB Atlas' ``sample_mflix`` and ``sample_analytics``.

``populate_sample_data(client, seed=42, scale=1.0)`` writes about 3,900 documents at scale 1.0 (see
``SAMPLE_COLLECTIONS``); the same seed and scale always give the same documents, ``_id``s included.
Every BSON type appears, in every document of the collection named (unless said otherwise):

- ObjectId: every ``_id``; ``comments.movie_id``
- datetime (naive UTC, millisecond precision, as pymongo returns it): ``comments.date``, ``movies.released``,
  ``users.sessions[].started``, ``transactions.date`` (2019-2024), ``customers.birthdate``
- Decimal128: ``transactions.amount``, ``transactions.total``, ``accounts.balance``
- Int64: ``movies.year``, ``accounts.limit``
- int32: ``movies.runtime``, ``movies.imdb.votes``, ``theaters.theaterId``, ``accounts.account_id``,
  ``transactions.account_id``
- double: ``movies.imdb.rating``, ``transactions.price``, ``theaters.location.geo.coordinates``
- bool: ``customers.active``, ``customers.tier_and_details.*.active``
- null: ``movies.rated`` and ``movies.metacritic`` (every third movie, the first one included)
- UUID (Binary subtype 4): ``users.external_id``
- Binary (subtype 0, Python ``bytes``): ``users.avatar``
- Regex: ``users.preferences.mute_pattern``
- Code: ``accounts.fee_rule``; Code with scope: ``accounts.limit_rule``
- Timestamp: ``accounts.last_modified``
- MinKey / MaxKey: ``accounts.limit_bounds.low`` / ``accounts.limit_bounds.high``
- DBRef: ``comments.user_ref`` (to ``sample_mflix.users``)
- nested documents: ``movies.imdb``, ``movies.awards``, ``movies.tomatoes.viewer``, ``theaters.location.geo``
- arrays of scalars: ``movies.genres``, ``movies.cast``, ``accounts.products``, ``customers.accounts``
- arrays of documents: ``users.sessions``
- a data-keyed map: ``customers.tier_and_details`` (keys are 32-hex ids; 0 to 3 per customer)
- a field present in some documents only: ``movies.poster`` (missing from every fourth movie)
"""

from __future__ import annotations

import random
import struct
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import mongomock
import pymongo
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

SAMPLE_COLLECTIONS: dict[str, dict[str, int]] = {
    "sample_mflix": {"comments": 1500, "movies": 500, "theaters": 100, "users": 200},
    "sample_analytics": {"accounts": 300, "transactions": 1000, "customers": 300},
}
"""Documents per collection at scale 1.0."""

_FIRST = (
    "Ada",
    "Ben",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Maya",
    "Nils",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
)
_LAST = (
    "Adams",
    "Baker",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Patel",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
)
_WORDS = (
    "night",
    "river",
    "shadow",
    "city",
    "garden",
    "storm",
    "silver",
    "last",
    "secret",
    "winter",
    "road",
    "island",
    "mirror",
    "fire",
    "golden",
    "quiet",
    "broken",
    "summer",
    "lost",
    "wild",
)
_GENRES = (
    "Drama",
    "Comedy",
    "Action",
    "Thriller",
    "Romance",
    "Crime",
    "Documentary",
    "Horror",
    "Sci-Fi",
    "Animation",
    "Family",
    "Western",
)
_RATED = ("G", "PG", "PG-13", "R", "NOT RATED")
_COUNTRIES = ("USA", "France", "UK", "Japan", "Italy", "Germany", "India", "Brazil")
_LANGUAGES = ("English", "French", "Japanese", "Italian", "German", "Hindi", "Portuguese")
_CITIES = (
    ("Bloomington", "MN", 44.85, -93.30),
    ("Boston", "MA", 42.36, -71.06),
    ("Denver", "CO", 39.74, -104.99),
    ("Austin", "TX", 30.27, -97.74),
    ("Seattle", "WA", 47.61, -122.33),
    ("Miami", "FL", 25.76, -80.19),
)
_PRODUCTS = ("Brokerage", "Commodity", "CurrencyService", "Derivatives", "InvestmentFund", "InvestmentStock")
_SYMBOLS = ("aapl", "amzn", "msft", "goog", "nvda", "ibm", "csco", "intc", "adbe", "crm", "ebay", "nflx")
_TIERS = ("Bronze", "Silver", "Gold", "Platinum")
_BENEFITS = (
    "sports tickets",
    "airline lounge access",
    "concert tickets",
    "car rental",
    "shopping discounts",
    "concierge services",
    "24 hour dedicated line",
    "dedicated account representative",
)
_DEVICES = ("web", "ios", "android", "tv")


def populate_sample_data(
    client: pymongo.MongoClient | mongomock.MongoClient, *, seed: int = 42, scale: float = 1.0
) -> dict[str, dict[str, int]]:
    """Replaces the sample collections with fresh deterministic documents; returns the counts written.

    ``client`` is a mongomock client (the stand-in's ``client``) or any pymongo client.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    counts = {
        database: {name: max(1, round(size * scale)) for name, size in collections.items()}
        for database, collections in SAMPLE_COLLECTIONS.items()
    }
    generator = _SampleGenerator(random.Random(seed))
    mflix, analytics = counts["sample_mflix"], counts["sample_analytics"]
    movies = [generator.movie(i) for i in range(mflix["movies"])]
    users = [generator.user(i) for i in range(mflix["users"])]
    accounts = [generator.account(i) for i in range(analytics["accounts"])]
    documents = {
        "sample_mflix": {
            "comments": [generator.comment(i, movies, users) for i in range(mflix["comments"])],
            "movies": movies,
            "theaters": [generator.theater(i) for i in range(mflix["theaters"])],
            "users": users,
        },
        "sample_analytics": {
            "accounts": accounts,
            "transactions": [generator.transaction(i, accounts) for i in range(analytics["transactions"])],
            "customers": [generator.customer(i, accounts) for i in range(analytics["customers"])],
        },
    }
    for database, collections in documents.items():
        for name, docs in collections.items():
            client[database].drop_collection(name)
            client[database][name].insert_many(docs)
    return counts


class _SampleGenerator:
    """Builds one document at a time; every random choice comes from the one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- shared helpers ----------------------------------------------------------------------------

    def object_id(self, created: datetime) -> ObjectId:
        seconds = int((created - datetime(1970, 1, 1)).total_seconds())
        return ObjectId(struct.pack(">I", seconds) + self.rng.randbytes(8))

    def moment(self, start: datetime, end: datetime) -> datetime:
        """A naive UTC datetime in [start, end) at millisecond precision, as BSON stores it."""
        span_ms = int((end - start).total_seconds() * 1000)
        return start + timedelta(milliseconds=self.rng.randrange(span_ms))

    def person(self) -> tuple[str, str]:
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        return f"{first} {last}", f"{first.lower()}.{last.lower()}{self.rng.randrange(1000)}@example.com"

    def title(self) -> str:
        words = self.rng.sample(_WORDS, self.rng.randint(1, 3))
        return "The " + " ".join(word.capitalize() for word in words)

    def sentence(self, words: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(words)).capitalize() + "."

    # -- sample_mflix ------------------------------------------------------------------------------

    def movie(self, index: int) -> dict[str, Any]:
        rng = self.rng
        released = self.moment(datetime(1920, 1, 1), datetime(2024, 1, 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        wins = rng.randrange(10)
        document: dict[str, Any] = {
            "_id": self.object_id(self.moment(datetime(2015, 1, 1), datetime(2016, 1, 1))),
            "title": self.title(),
            "year": Int64(released.year),
            "runtime": rng.randint(70, 190),
            "rated": None if index % 3 == 0 else rng.choice(_RATED),
            "plot": self.sentence(12),
            "genres": rng.sample(_GENRES, rng.randint(1, 3)),
            "cast": [self.person()[0] for _ in range(rng.randint(2, 5))],
            "directors": [self.person()[0]],
            "languages": rng.sample(_LANGUAGES, rng.randint(1, 2)),
            "countries": rng.sample(_COUNTRIES, rng.randint(1, 2)),
            "released": released,
            "imdb": {
                "rating": round(rng.uniform(1.5, 9.5), 1),
                "votes": rng.randint(5, 900_000),
                "id": rng.randint(1000, 9_999_999),
            },
            "awards": {
                "wins": wins,
                "nominations": wins + rng.randrange(10),
                "text": f"{wins} wins." if wins else "No awards.",
            },
            "tomatoes": {
                "viewer": {
                    "rating": round(rng.uniform(1.0, 5.0), 1),
                    "numReviews": rng.randrange(50_000),
                    "meter": rng.randrange(101),
                },
                "lastUpdated": self.moment(datetime(2015, 1, 1), datetime(2016, 1, 1)),
            },
            "metacritic": None if index % 3 == 0 else rng.randint(10, 100),
            "num_mflix_comments": 0,
            "type": "series" if index % 17 == 0 else "movie",
        }
        if index % 4:  # a quarter of the movies have no poster at all: fields come and go
            document["poster"] = f"https://posters.example.com/{rng.randrange(10**8):08d}.jpg"
        return document

    def user(self, index: int) -> dict[str, Any]:
        rng = self.rng
        name, email = self.person()
        created = self.moment(datetime(2015, 1, 1), datetime(2020, 1, 1))
        return {
            "_id": self.object_id(created),
            "name": name,
            "email": email,
            "password": "$2b$12$" + rng.randbytes(22).hex()[:53],
            "external_id": Binary.from_uuid(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "avatar": rng.randbytes(24),
            "created_at": created,
            "preferences": {
                "genres": rng.sample(_GENRES, 2),
                "mute_pattern": Regex(f"^(spoiler|{rng.choice(_WORDS)})", "i"),
            },
            "sessions": [
                {
                    "started": self.moment(created, datetime(2024, 1, 1)),
                    "device": rng.choice(_DEVICES),
                    "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                }
                for _ in range(rng.randint(1, 4))
            ],
        }

    def comment(
        self, index: int, movies: list[dict[str, Any]], users: list[dict[str, Any]]
    ) -> dict[str, Any]:
        rng = self.rng
        movie, user = rng.choice(movies), rng.choice(users)
        movie["num_mflix_comments"] += 1
        date = self.moment(datetime(1970, 1, 1), datetime(2017, 1, 1))
        return {
            "_id": self.object_id(date),
            "name": user["name"],
            "email": user["email"],
            "movie_id": movie["_id"],
            "user_ref": DBRef("users", user["_id"]),
            "text": self.sentence(rng.randint(8, 30)),
            "date": date,
        }

    def theater(self, index: int) -> dict[str, Any]:
        rng = self.rng
        city, state, lat, lon = rng.choice(_CITIES)
        return {
            "_id": self.object_id(self.moment(datetime(2016, 1, 1), datetime(2017, 1, 1))),
            "theaterId": 1000 + index,
            "location": {
                "address": {
                    "street1": f"{rng.randint(1, 9999)} {rng.choice(_WORDS).capitalize()} St",
                    "city": city,
                    "state": state,
                    "zipcode": f"{rng.randrange(10000, 99999)}",
                },
                "geo": {
                    "type": "Point",
                    "coordinates": [
                        round(lon + rng.uniform(-0.5, 0.5), 6),
                        round(lat + rng.uniform(-0.5, 0.5), 6),
                    ],
                },
            },
        }

    # -- sample_analytics --------------------------------------------------------------------------

    def account(self, index: int) -> dict[str, Any]:
        rng = self.rng
        limit = rng.choice((3000, 5000, 10000, 1_000_000_000_000))
        modified = self.moment(datetime(2022, 1, 1), datetime(2024, 1, 1))
        return {
            "_id": self.object_id(self.moment(datetime(2017, 1, 1), datetime(2018, 1, 1))),
            "account_id": 100_000 + index * 17 + rng.randrange(17),
            "limit": Int64(limit),
            "products": rng.sample(_PRODUCTS, rng.randint(1, 4)),
            "balance": Decimal128(Decimal(rng.randrange(0, 5_000_000)) / 100),
            "fee_rule": Code("function(balance) { return balance > 10000 ? 0 : 4.99; }"),
            "limit_rule": Code("function(amount) { return amount <= limit; }", {"limit": limit}),
            "last_modified": Timestamp(int((modified - datetime(1970, 1, 1)).total_seconds()), index + 1),
            "limit_bounds": {"low": MinKey(), "high": MaxKey()},
        }

    def transaction(self, index: int, accounts: list[dict[str, Any]]) -> dict[str, Any]:
        rng = self.rng
        date = self.moment(datetime(2019, 1, 1), datetime(2025, 1, 1))
        amount = Decimal(rng.randrange(1, 1_000_000)) / 100
        price = round(rng.uniform(5.0, 900.0), 4)
        return {
            "_id": self.object_id(date),
            "account_id": rng.choice(accounts)["account_id"],
            "date": date,
            "amount": Decimal128(amount),
            "transaction_code": rng.choice(("buy", "sell")),
            "symbol": rng.choice(_SYMBOLS),
            "price": price,
            "total": Decimal128((amount * Decimal(str(price))).quantize(Decimal("0.01"))),
        }

    def customer(self, index: int, accounts: list[dict[str, Any]]) -> dict[str, Any]:
        rng = self.rng
        name, email = self.person()
        tiers = {}
        for _ in range(rng.randint(0, 3)):
            key = rng.randbytes(16).hex()
            tiers[key] = {
                "tier": rng.choice(_TIERS),
                "id": key,
                "active": rng.random() < 0.8,
                "benefits": rng.sample(_BENEFITS, rng.randint(1, 3)),
            }
        return {
            "_id": self.object_id(self.moment(datetime(2017, 1, 1), datetime(2018, 1, 1))),
            "username": email.split("@")[0].replace(".", ""),
            "name": name,
            "address": f"{rng.randint(1, 9999)} {rng.choice(_WORDS).capitalize()} Avenue",
            "birthdate": self.moment(datetime(1940, 1, 1), datetime(2002, 1, 1)),
            "email": email,
            "active": index % 5 != 0,
            "accounts": [
                account["account_id"]
                for account in rng.sample(accounts, min(len(accounts), rng.randint(1, 5)))
            ],
            "tier_and_details": tiers,
        }
