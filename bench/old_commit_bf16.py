"""A bench profile run from a checkout of an older commit, with bf16 autocast forced on: commits before 81ddacd chose
bf16 on AMX CPUs only (`cpu_has_amx`), so on other CPUs with bf16 they trained in fp32. For comparisons at the same
precision on the same machine (README, Results).

    git worktree add ../base 8f91491
    python bench/old_commit_bf16.py ../base fast 0 ../shared/cifar10     # CHECKOUT PROFILE SEED DATA
Its result JSON goes to CHECKOUT/bench/results/.
"""
import sys
from pathlib import Path

checkout, profile, seed, data = Path(sys.argv[1]).resolve(), sys.argv[2], int(sys.argv[3]), str(Path(sys.argv[4]).resolve())
sys.path.insert(0, str(checkout))
import recipe  # noqa: E402  (the checkout's)
assert Path(recipe.__file__).resolve().parent == checkout/'recipe', f"imported {recipe.__file__}, not the checkout's"
sys.modules['recipe.train'].cpu_has_amx = lambda: True  # the module: `recipe.train` is also the function
from recipe.bench import run_profile  # noqa: E402
print(run_profile(profile, seed=seed, data=data, results=checkout/'bench/results', runs=checkout/'runs'))
