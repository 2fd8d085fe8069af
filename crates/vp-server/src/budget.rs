//! Memory budget: a server is given the memory it may use (from its container limit), keeps a fixed part for
//! itself (runtime, model, buffers) and hands the rest out as reservations to requests before they allocate
//! (request bodies, decoded tensors, decoded images). A request that could never fit is refused with 413; one
//! that does not fit now is refused with 503 like any other overload.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB so that a u32 permit count covers budgets up to 4 TiB.
const UNIT: u64 = 1024;

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "this request needs about {need_mib} MiB, more than this server may use for one request ({capacity_mib} MiB)"
    )]
    TooLarge { need_mib: u64, capacity_mib: u64 },
    #[error("the server's memory budget is in use by other requests; retry after a second")]
    Busy,
    #[error(
        "--memory-budget-mib {total_mib} leaves nothing for requests after the {reserve_mib} MiB the server keeps for itself"
    )]
    Config { total_mib: u64, reserve_mib: u64 },
}

/// The request part of a server's memory budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    capacity: u64,
}

/// Memory held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).max(1)
}

impl MemoryBudget {
    /// `total_mib` is the server's whole budget; `reserve_mib` of it is kept for the process itself.
    pub fn new(total_mib: u64, reserve_mib: u64) -> Result<Self, BudgetError> {
        let capacity = total_mib
            .checked_sub(reserve_mib)
            .filter(|c| *c > 0)
            .ok_or(BudgetError::Config {
                total_mib,
                reserve_mib,
            })?
            .saturating_mul(1024 * 1024);
        let permits = usize::try_from(units(capacity))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Ok(Self {
            units: Arc::new(Semaphore::new(permits)),
            capacity,
        })
    }

    /// Bytes available to requests in all.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Reserves `bytes` if they fit now.
    pub fn try_reserve(&self, bytes: u64) -> Result<Reservation, BudgetError> {
        self.check(bytes)?;
        let n = u32::try_from(units(bytes)).map_err(|_| self.too_large(bytes))?;
        self.units
            .clone()
            .try_acquire_many_owned(n)
            .map(|p| Reservation(Some(p)))
            .map_err(|_| BudgetError::Busy)
    }

    /// Reserves `bytes`, waiting until other requests give enough back.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, BudgetError> {
        self.check(bytes)?;
        let n = u32::try_from(units(bytes)).map_err(|_| self.too_large(bytes))?;
        self.units
            .clone()
            .acquire_many_owned(n)
            .await
            .map(|p| Reservation(Some(p)))
            .map_err(|_| BudgetError::Busy)
    }

    fn check(&self, bytes: u64) -> Result<(), BudgetError> {
        if bytes > self.capacity {
            Err(self.too_large(bytes))
        } else {
            Ok(())
        }
    }

    fn too_large(&self, bytes: u64) -> BudgetError {
        BudgetError::TooLarge {
            need_mib: bytes.div_ceil(1024 * 1024),
            capacity_mib: self.capacity / (1024 * 1024),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_or_are_refused() {
        let b = MemoryBudget::new(10, 6).expect("4 MiB for requests");
        assert_eq!(b.capacity(), 4 << 20);
        let a = b.try_reserve(3 << 20).expect("fits");
        assert_eq!(b.try_reserve(2 << 20).expect_err("busy"), BudgetError::Busy);
        drop(a);
        let _c = b.try_reserve(2 << 20).expect("fits again");
        assert!(matches!(
            b.try_reserve(5 << 20),
            Err(BudgetError::TooLarge {
                need_mib: 5,
                capacity_mib: 4
            })
        ));
        assert!(matches!(
            MemoryBudget::new(6, 6),
            Err(BudgetError::Config { .. })
        ));
    }

    #[tokio::test]
    async fn a_waiting_reservation_proceeds_when_memory_is_given_back() {
        let b = MemoryBudget::new(2, 1).expect("budget");
        let a = b.try_reserve(1 << 20).expect("all of it");
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.reserve(512 << 10).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.expect("join"), Ok(()));
    }
}
