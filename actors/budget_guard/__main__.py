"""``python -m actors.budget_guard``"""

from actors.budget_guard.actor import BudgetGuard
from bus.runner import main

if __name__ == "__main__":
    main(BudgetGuard)
