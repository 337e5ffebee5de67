"""Short keys from leased ids: a keyed Feistel bijection onto 7-character base62 keys (pure).

Every write server leases blocks of ids from one PostgreSQL sequence (store.lease_block), so
no id is ever handed out twice, across any number of replicas. An id alone would make keys
guessable in sequence (aaaaaab follows aaaaaaa), so each id goes through a permutation of
[0, 62**7) keyed by the resource's secret before it is spelled in base62:

- a balanced Feistel network on 42 bits (2**42 > 62**7), four rounds of keyed BLAKE2b, is a
  permutation of [0, 2**42) whatever its round function, because each round is invertible;
- cycle-walking (apply it again while the value is >= 62**7) restricts it to a permutation of
  [0, 62**7): the walk from a value in the domain always comes back into the domain, and two
  inputs never meet, since the whole network is a bijection.

So distinct ids give distinct keys (no collision check, no retry), and without the secret the
order of keys tells nothing about the next one. Ids are spent 62**7 ~ 3.5 * 10**12 times at
most; `key_of` refuses an id outside the domain rather than wrap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LENGTH = 7
DOMAIN = len(ALPHABET) ** LENGTH  # 3,521,614,606,208
_HALF = 21
_MASK = (1 << _HALF) - 1
_ROUNDS = 4
_INDEX = {char: value for value, char in enumerate(ALPHABET)}


def encode(number: int) -> str:
    """`number` in [0, DOMAIN) as exactly LENGTH base62 characters."""
    if not 0 <= number < DOMAIN:
        raise ValueError(f"{number} is outside [0, 62**{LENGTH})")
    chars = []
    for _ in range(LENGTH):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def decode(key: str) -> int:
    if len(key) != LENGTH or any(char not in _INDEX for char in key):
        raise ValueError(f"{key!r} is not {LENGTH} base62 characters")
    number = 0
    for char in key:
        number = number * 62 + _INDEX[char]
    return number


def is_generated_shape(key: str) -> bool:
    """Whether `key` looks like a generated key (LENGTH base62 characters): a custom alias of
    this shape is refused, so an alias can never take a key the generator will hand out."""
    return len(key) == LENGTH and all(char in _INDEX for char in key)


@dataclass(frozen=True, slots=True)
class Permutation:
    """The keyed bijection of [0, DOMAIN); `secret` is the resource's (at least 16 bytes)."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the key secret must be at least 16 bytes")

    def _round(self, index: int, half: int) -> int:
        digest = hashlib.blake2b(
            half.to_bytes(3, "big"), digest_size=4, key=self.secret[:64], person=bytes([index]) * 8
        ).digest()
        return int.from_bytes(digest, "big") & _MASK

    def _network(self, value: int) -> int:
        left, right = value >> _HALF, value & _MASK
        for index in range(_ROUNDS):
            left, right = right, left ^ self._round(index, right)
        return (left << _HALF) | right

    def _inverse_network(self, value: int) -> int:
        left, right = value >> _HALF, value & _MASK
        for index in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(index, left), left
        return (left << _HALF) | right

    def forward(self, number: int) -> int:
        if not 0 <= number < DOMAIN:
            raise ValueError(f"id {number} is outside [0, 62**{LENGTH}): the key space is spent")
        value = self._network(number)
        while value >= DOMAIN:  # cycle-walking: stays a bijection of [0, DOMAIN)
            value = self._network(value)
        return value

    def backward(self, number: int) -> int:
        if not 0 <= number < DOMAIN:
            raise ValueError(f"{number} is outside [0, 62**{LENGTH})")
        value = self._inverse_network(number)
        while value >= DOMAIN:
            value = self._inverse_network(value)
        return value

    def key_of(self, ident: int) -> str:
        return encode(self.forward(ident))

    def id_of(self, key: str) -> int:
        return self.backward(decode(key))


@dataclass
class Block:
    """Ids [next, end) of one leased block, spent in order by one server."""

    next: int
    end: int

    @property
    def left(self) -> int:
        return self.end - self.next

    def take(self) -> int:
        if self.next >= self.end:
            raise LookupError("block spent")
        ident = self.next
        self.next += 1
        return ident


def block_ids(block: int, size: int) -> Block:
    """The ids of the `block`-th value of the sequence (1-based, as nextval returns)."""
    if block < 1 or size < 1:
        raise ValueError("blocks and their size start at 1")
    return Block(next=(block - 1) * size, end=block * size)


def delete_token(secret: bytes, key: str) -> str:
    """What proves that a caller made `key`, so may delete it: a keyed hash (HMAC-SHA256, 128
    bits kept) of the key under the resource's delete secret. Shorten and CreatePaste answer
    it; nothing stores it, and without the secret nobody can make one for another key."""
    digest = hmac.new(secret, b"delete\0" + key.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(secret: bytes, key: str, token: str) -> bool:
    """In constant time: a wrong token's prefix tells nothing."""
    return hmac.compare_digest(delete_token(secret, key).encode(), token.encode())
