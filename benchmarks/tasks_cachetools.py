"""The suite's tasks on cachetools 8.0.3 (benchmarks/repos/cachetools, a src layout with its own tests): questions
whose answers are worked out from the snapshot, find-then-read questions, additions and planted bugs to fix, each
edit checked by a hidden test beside the project's 480 shipped ones."""

from __future__ import annotations

from benchmarks.task_checks import DefinedIn, Number, Read, Text, file_line, python_number, python_value
from benchmarks.task_set import REPOS, Plant, edit, multi_step, question

CACHETOOLS = REPOS / "cachetools"
INIT = "src/cachetools/__init__.py"
KEYS = "src/cachetools/keys.py"


def default_name(module: str, function: str, parameter: str) -> Text:
    """The name of the function a parameter defaults to, from the function's signature."""
    return Text(python_value(f"import inspect\nfrom {module} import {function}\n"
                             f"inspect.signature({function}).parameters[{parameter!r}].default.__name__"))


TASKS = [
    question("ct-where-typedkey", "In which file is the function `typedkey` defined? Answer with its path.",
             DefinedIn("typedkey"), CACHETOOLS),
    question("ct-where-ttl-cache", "Which file defines the decorator `ttl_cache`? Answer with its path.",
             DefinedIn("ttl_cache"), CACHETOOLS),
    question("ct-ttl-default", "For how many seconds does `ttl_cache` keep a result when no `ttl` is given? Answer "
             "with the number.",
             Number(python_number("import inspect\nfrom cachetools.func import ttl_cache\n"
                                  "inspect.signature(ttl_cache).parameters['ttl'].default")), CACHETOOLS),
    question("ct-timer-default", "Which function does `TTLCache` call to get the current time when no `timer` is "
             "given? Answer with its name.", default_name("cachetools", "TTLCache", "timer"), CACHETOOLS),
    question("ct-too-large", "Which exception does a `Cache` raise when one value is bigger than its `maxsize`? "
             "Answer with the exception's name.",
             Text(python_value("import cachetools\n"
                               "def raised():\n"
                               "    try:\n"
                               "        cachetools.Cache(maxsize=1, getsizeof=len)['key'] = 'too long'\n"
                               "    except Exception as exc:\n"
                               "        return type(exc).__name__\n"
                               "raised()")), CACHETOOLS),
    multi_step("ct-kwmark-class", "The key functions put a marker between the positional and the keyword arguments "
               "of a call. Find where that marker is defined and name the class it is made from.",
               Read(Text(python_value("from cachetools import keys\nkeys._kwmark[0].__name__")),
                    file_line(KEYS, r"^_kwmark = ")), CACHETOOLS),
    multi_step("ct-rr-choice", "Find the random-replacement cache class and say which function it uses by default "
               "to pick the item to evict. Answer with the function's name.",
               Read(default_name("cachetools", "RRCache", "choice"),
                    file_line(INIT, r"def __init__\(self, maxsize, choice=")), CACHETOOLS),
    multi_step("ct-cacheinfo-fields", "With `info=True`, `cached` reports its statistics in a named tuple. Find "
               "where that tuple is defined and say how many fields it has.",
               Read(Number(python_number("from cachetools import CacheInfo\nlen(CacheInfo._fields)")),
                    file_line(INIT, r"^class CacheInfo\(")), CACHETOOLS),
    edit("ct-add-lru-peek", "Add a method `peek(key, default=None)` to `LRUCache` that returns the value stored for "
         "`key`, or `default` when the key is not in the cache, without making the key the most recently used. "
         "Keep the tests passing.",
         "from cachetools import LRUCache\n\n\n"
         "def test_peek_leaves_the_order():\n"
         "    cache = LRUCache(maxsize=2)\n"
         "    cache['a'], cache['b'] = 1, 2\n"
         "    assert cache.peek('a') == 1\n"
         "    cache['c'] = 3\n"
         "    assert 'a' not in cache and cache['b'] == 2 and cache['c'] == 3\n\n\n"
         "def test_peek_of_a_missing_key():\n"
         "    cache = LRUCache(maxsize=2)\n"
         "    assert cache.peek('missing') is None\n"
         "    assert cache.peek('missing', 'default') == 'default'\n"
         "    assert len(cache) == 0\n", CACHETOOLS),
    edit("ct-add-hit-ratio", "Add a property `hit_ratio` to `CacheInfo`: hits divided by hits plus misses, and 0.0 "
         "when there were neither. Keep the tests passing.",
         "from cachetools import CacheInfo, LRUCache, cached\n\n\n"
         "def test_hit_ratio():\n"
         "    assert CacheInfo(3, 1, 10, 2).hit_ratio == 0.75\n"
         "    assert CacheInfo(0, 0, None, 0).hit_ratio == 0.0\n\n\n"
         "def test_hit_ratio_of_a_cached_function():\n"
         "    @cached(LRUCache(maxsize=4), info=True)\n"
         "    def double(x):\n"
         "        return 2 * x\n"
         "    for x in (1, 1, 1, 2):\n"
         "        double(x)\n"
         "    assert double.cache_info().hit_ratio == 0.5\n", CACHETOOLS),
    edit("ct-add-strkey", "Add a key function `strkey(*args, **kwargs)` to the module of key functions: like "
         "`hashkey`, but with every argument's value turned into a `str` first, so that `strkey(1)` and "
         "`strkey('1')` are the same key. Keep the tests passing.",
         "from cachetools import keys\n\n\n"
         "def test_strkey():\n"
         "    assert keys.strkey(1) == keys.strkey('1')\n"
         "    assert keys.strkey(1, b=2) == keys.strkey('1', b='2')\n"
         "    assert keys.strkey(1, b=2) == keys.strkey(1, b='2')\n"
         "    assert keys.strkey(1) != keys.strkey(2)\n"
         "    assert keys.strkey(a=1) != keys.strkey(1)\n"
         "    assert hash(keys.strkey([1, 2], x={'y': 3})) == hash(keys.strkey('[1, 2]', x=\"{'y': 3}\"))\n",
         CACHETOOLS),
    edit("ct-fix-lru-read", "Fix a bug in `LRUCache`: reading a key does not make it the most recently used, so a "
         "key that was just read can be evicted before one that was not read for longer. Keep the tests passing.",
         "from cachetools import LRUCache\n\n\n"
         "def test_a_read_key_is_kept():\n"
         "    cache = LRUCache(maxsize=2)\n"
         "    cache['a'], cache['b'] = 1, 2\n"
         "    assert cache['a'] == 1\n"
         "    cache['c'] = 3\n"
         "    assert 'a' in cache and 'b' not in cache and 'c' in cache\n", CACHETOOLS,
         Plant(INIT, "            self.__order.move_to_end(key)\n        except KeyError:  # __missing__",
               "            self.__order[key]\n        except KeyError:  # __missing__")),
    edit("ct-fix-ttl-expiry", "Fix a bug in `TTLCache`: an item is still there when its time to live has passed "
         "(with `ttl=10`, an item set at time 0 can still be read at time 10). Keep the tests passing.",
         "from cachetools import TTLCache\n\n\n"
         "class Clock:\n"
         "    def __init__(self):\n"
         "        self.now = 0\n\n"
         "    def __call__(self):\n"
         "        return self.now\n\n\n"
         "def test_an_item_expires_after_its_ttl():\n"
         "    clock = Clock()\n"
         "    cache = TTLCache(maxsize=4, ttl=10, timer=clock)\n"
         "    cache['a'] = 1\n"
         "    clock.now = 9\n"
         "    assert cache['a'] == 1\n"
         "    clock.now = 10\n"
         "    assert 'a' not in cache and cache.get('a') is None and len(cache) == 0\n", CACHETOOLS,
         Plant(INIT, "expires = time + self.__ttl", "expires = time + self.__ttl + 1")),
    edit("ct-fix-kwargs-order", "Fix a bug: two calls of a cached function that pass the same keyword arguments in a "
         "different order are cached as two different calls. Keep the tests passing.",
         "from cachetools import LRUCache, cached, keys\n\n\n"
         "def test_keyword_order_does_not_matter():\n"
         "    assert keys.hashkey(1, a=2, b=3) == keys.hashkey(1, b=3, a=2)\n"
         "    calls = []\n\n"
         "    @cached(LRUCache(maxsize=4))\n"
         "    def add(a, b):\n"
         "        calls.append((a, b))\n"
         "        return a + b\n\n"
         "    assert add(a=1, b=2) == add(b=2, a=1) == 3\n"
         "    assert calls == [(1, 2)]\n", CACHETOOLS,
         Plant(KEYS, '"""Return a cache key for the specified hashable arguments."""\n\n    if kwargs:\n'
                     "        return args + _kwmark + tuple(sorted(kwargs.items()))",
               '"""Return a cache key for the specified hashable arguments."""\n\n    if kwargs:\n'
               "        return args + _kwmark + tuple(kwargs.items())")),
]
