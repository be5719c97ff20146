"""Real answers for the diversity tests: code and prose answers to one task, written the way different
model families answer (different approaches), and the way one model answers at varied temperatures
(the same approach, reworded or with renamed variables)."""

from __future__ import annotations

FIB_DIVERSE = [
    # recursive
    '''```python
def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
```''',
    # iterative with tuple swap
    """Here is an iterative version:

```python
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```
It runs in O(n) time and O(1) space.""",
    # memoised
    """```python
from functools import lru_cache


@lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
```""",
    # closed form (Binet)
    """```python
import math

def nth_fib(n):
    phi = (1 + math.sqrt(5)) / 2
    psi = (1 - math.sqrt(5)) / 2
    return round((phi ** n - psi ** n) / math.sqrt(5))
```""",
    # dynamic programming table
    """```python
def fib(n):
    if n == 0:
        return 0
    table = [0] * (n + 1)
    table[1] = 1
    for i in range(2, n + 1):
        table[i] = table[i - 1] + table[i - 2]
    return table[n]
```""",
    # generator
    """```python
def fib_gen():
    a, b = 0, 1
    while True:
        yield a
        a, b = b, a + b


def fib(n):
    for i, value in enumerate(fib_gen()):
        if i == n:
            return value
```""",
]

FIB_SAME = [
    """```python
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```""",
    '''```python
def fib(k):
    """Iterative Fibonacci."""
    x, y = 0, 1
    for _ in range(k):
        x, y = y, x + y
    return x
```''',
    """Sure! Here is the solution:

```python
def nth_fibonacci(count):
    prev, cur = 0, 1
    for step in range(count):
        prev, cur = cur, prev + cur
    return prev
```""",
    """```python
def fib(n):
    first, second = 0, 1
    for _ in range(n):
        first, second = second, first + second
    return first
```""",
    """```py
def get_fib(num):
    a, b = 0, 1
    for _ in range(num):
        a, b = b, a + b
    return a
```""",
    """```python
def fibo(n):
    # classic loop
    lo, hi = 0, 1
    for _ in range(n):
        lo, hi = hi, lo + hi
    return lo
```""",
]

SKY_DIVERSE = [
    "Sunlight is made of many wavelengths. Molecules of nitrogen and oxygen in the air scatter short wavelengths "
    "much more strongly than long ones (Rayleigh scattering goes as one over the wavelength to the fourth power), "
    "so blue light is redirected across the whole sky and reaches our eyes from every direction.",
    "Imagine throwing tiny balls at a field of posts: the small fast ones bounce everywhere while the big ones go "
    "straight through. Blue light behaves like the small balls and gets bounced all around the air, which is why "
    "when you look up, everything looks blue.",
    "In the 1860s John Tyndall showed that fine particles scatter blue light, and in 1871 Lord Rayleigh worked out "
    "the mathematics. Later Einstein and Smoluchowski explained that even the density fluctuations of pure air "
    "are enough, which settled the question of the colour of a clear sky.",
    "At sunset the light crosses far more atmosphere before it reaches you, so most of the blue has been scattered "
    "away and the remaining reds and oranges dominate. The same process that makes the evening sky red makes the "
    "midday sky blue.",
    "Violet light is scattered even more than blue, yet the sky does not look violet: the Sun emits less violet, "
    "some of it is absorbed high in the atmosphere, and our eyes' cone cells are far less sensitive to it, so the "
    "mixture we perceive peaks in blue.",
    "A practical way to check it yourself: shine a flashlight through a glass of water with a few drops of milk. "
    "From the side the water looks bluish, while the light coming straight through looks orange, just like the "
    "daytime sky and the setting sun.",
]

SKY_SAME = [
    "The sky is blue because of Rayleigh scattering: air molecules scatter short blue wavelengths of sunlight much "
    "more than the longer red wavelengths, so blue light reaches our eyes from all directions.",
    "The sky looks blue because of Rayleigh scattering: molecules in the air scatter the short blue wavelengths of "
    "sunlight far more than longer red wavelengths, so blue light comes to our eyes from every direction.",
    "Because of Rayleigh scattering, the sky is blue: the air's molecules scatter short, blue wavelengths of "
    "sunlight much more strongly than long, red ones, so we see blue light coming from all directions.",
    "The blue colour of the sky comes from Rayleigh scattering: air molecules scatter blue light, which has short "
    "wavelengths, much more than red light with long wavelengths, so blue reaches us from all directions.",
    "Rayleigh scattering makes the sky blue: the molecules of the air scatter the short blue wavelengths in "
    "sunlight more than the long red ones, and so blue light arrives at our eyes from all directions.",
    "The sky appears blue due to Rayleigh scattering: short blue wavelengths of sunlight are scattered by air "
    "molecules much more than long red wavelengths, so blue light reaches our eyes from all around.",
]
