//! The sequential specification of one register key: read, write and
//! compare-and-set, in the style of stateright's `semantics::register::Register`
//! (which has no compare-and-set), made fit for long histories in three ways.
//!
//! **Unknown outcomes.** An operation that ended `info` (or never ended) may or
//! may not have taken effect. It is given to the tester as completing at the end
//! of the history with the return [`RegisterRet::Unknown`], so it may be placed
//! anywhere after its invocation (placing it last is the same as never applying
//! it). The register holds the *set* of values it may have (a subset
//! construction): an unknown write adds its value to the set, a read must
//! return one of the values and pins the set to it. So the search can place an
//! unknown operation early without losing the case where it did not happen,
//! instead of trying it at every later position.
//!
//! **Memoization.** stateright's `LinearizabilityTester` searches the orders of
//! operations depth-first and remembers nothing, so a history that has no
//! linearization is searched exponentially. Each operation carries an id; each
//! clone of the spec knows which operations it has applied and which values it
//! may hold, and a table shared by all clones remembers every such configuration
//! reached. The search never returns to a configuration it already left (the
//! set of applied operations only grows along a path), so reaching one again
//! means it was explored and failed: [`SequentialSpec::is_valid_step`] refuses it.
//! What remains to be linearized depends only on the applied set, and the rest
//! only on the values, so this is exact (the "cache" of Knossos and Porcupine).
//!
//! **Time limit.** The tester's search cannot be stopped from outside, so every
//! step checks the deadline and, once it has passed, unwinds the search with
//! [`TimeLimitExceeded`] (via `resume_unwind`, which prints nothing); the caller
//! catches it and reports `unknown`.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Instant;

use stateright::semantics::SequentialSpec;

/// A register value, interned: [`ABSENT`] is `null`, the initial value.
pub type ValueId = u32;

/// The value of a key never written.
pub const ABSENT: ValueId = 0;

/// An operation on the register, with an id unique in the history checked
/// (`0..ops`), which the memoization needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegisterOp {
    pub id: u32,
    pub kind: OpKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpKind {
    Read,
    Write(ValueId),
    /// Compare-and-set: if the value is `expect`, make it `new`.
    Cas {
        expect: ValueId,
        new: ValueId,
    },
}

/// What a register operation returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RegisterRet {
    ReadOk(ValueId),
    WriteOk,
    CasOk,
    /// The outcome is unknown: the operation may or may not have taken effect.
    Unknown,
}

/// Unwinding payload: the search ran out of time.
#[derive(Debug)]
pub struct TimeLimitExceeded;

/// What all clones of the spec share during one search: the deadline, the
/// configurations reached, and counters.
#[derive(Debug)]
pub struct SearchState {
    deadline: Instant,
    steps: Cell<u64>,
    revisits: Cell<u64>,
    seen: RefCell<HashSet<(Vec<u64>, Vec<ValueId>)>>,
}

impl SearchState {
    pub fn new(deadline: Instant) -> Rc<SearchState> {
        Rc::new(SearchState {
            deadline,
            steps: Cell::new(0),
            revisits: Cell::new(0),
            seen: RefCell::default(),
        })
    }

    /// Steps the search took (calls into the spec).
    pub fn steps(&self) -> u64 {
        self.steps.get()
    }

    /// Steps refused because their configuration had already been explored.
    pub fn revisits(&self) -> u64 {
        self.revisits.get()
    }

    fn tick(&self) {
        self.steps.set(self.steps.get() + 1);
        if Instant::now() >= self.deadline {
            std::panic::resume_unwind(Box::new(TimeLimitExceeded));
        }
    }
}

/// The register: the values it may hold, and the operations applied so far.
#[derive(Clone, Debug)]
pub struct CasRegister {
    /// Sorted, without repeats; never empty.
    values: Vec<ValueId>,
    /// Bit `id` is set once operation `id` is applied.
    applied: Vec<u64>,
    search: Rc<SearchState>,
}

impl CasRegister {
    /// An absent register, for a history of `ops` operations (ids `0..ops`).
    pub fn new(ops: usize, search: Rc<SearchState>) -> Self {
        CasRegister {
            values: vec![ABSENT],
            applied: vec![0; ops.div_ceil(64)],
            search,
        }
    }

    /// The values the register may hold.
    pub fn values(&self) -> &[ValueId] {
        &self.values
    }

    fn may_hold(&self, v: ValueId) -> bool {
        self.values.binary_search(&v).is_ok()
    }

    fn may_also_hold(&mut self, v: ValueId) {
        if let Err(at) = self.values.binary_search(&v) {
            self.values.insert(at, v);
        }
    }

    /// Applies one step to the set of values; `false` if no value allows it.
    fn apply(&mut self, kind: OpKind, ret: RegisterRet) -> bool {
        match (kind, ret) {
            (OpKind::Read, RegisterRet::ReadOk(v))
            | (OpKind::Cas { expect: v, .. }, RegisterRet::CasOk)
                if !self.may_hold(v) =>
            {
                false
            }
            (OpKind::Read, RegisterRet::ReadOk(v))
            | (OpKind::Write(v), RegisterRet::WriteOk)
            | (OpKind::Cas { new: v, .. }, RegisterRet::CasOk) => {
                self.values = vec![v];
                true
            }
            (OpKind::Read, RegisterRet::Unknown) => true,
            (OpKind::Write(v), RegisterRet::Unknown) => {
                self.may_also_hold(v);
                true
            }
            (OpKind::Cas { expect, new }, RegisterRet::Unknown) => {
                if self.may_hold(expect) {
                    self.may_also_hold(new);
                }
                true
            }
            _ => false,
        }
    }

    /// Marks the operation applied; `false` if this configuration was reached before.
    fn first_visit(&mut self, id: u32) -> bool {
        self.applied[id as usize / 64] |= 1 << (id % 64);
        let fresh = self
            .search
            .seen
            .borrow_mut()
            .insert((self.applied.clone(), self.values.clone()));
        if !fresh {
            self.search.revisits.set(self.search.revisits.get() + 1);
        }
        fresh
    }
}

impl SequentialSpec for CasRegister {
    type Op = RegisterOp;
    type Ret = RegisterRet;

    /// Only for operations left in flight, whose outcome is unknown.
    fn invoke(&mut self, op: &RegisterOp) -> RegisterRet {
        self.search.tick();
        self.apply(op.kind, RegisterRet::Unknown);
        self.applied[op.id as usize / 64] |= 1 << (op.id % 64);
        RegisterRet::Unknown
    }

    fn is_valid_step(&mut self, op: &RegisterOp, ret: &RegisterRet) -> bool {
        self.search.tick();
        self.apply(op.kind, *ret) && self.first_visit(op.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn register(ops: usize) -> CasRegister {
        CasRegister::new(
            ops,
            SearchState::new(Instant::now() + Duration::from_secs(60)),
        )
    }

    fn op(id: u32, kind: OpKind) -> RegisterOp {
        RegisterOp { id, kind }
    }

    #[test]
    fn models_read_write_cas() {
        let mut r = register(8);
        assert!(r.is_valid_step(&op(0, OpKind::Read), &RegisterRet::ReadOk(ABSENT)));
        let cas = |id, expect, new| op(id, OpKind::Cas { expect, new });
        assert!(!r.clone().is_valid_step(&cas(1, 7, 1), &RegisterRet::CasOk));
        assert!(r.is_valid_step(&cas(1, ABSENT, 1), &RegisterRet::CasOk));
        assert!(r.is_valid_step(&op(2, OpKind::Read), &RegisterRet::ReadOk(1)));
        assert!(!r.clone().is_valid_step(&cas(3, 2, 3), &RegisterRet::CasOk));
        assert!(r.is_valid_step(&op(3, OpKind::Write(2)), &RegisterRet::WriteOk));
        assert_eq!(r.values(), &[2]);
    }

    #[test]
    fn unknown_outcomes_widen_the_values_and_reads_pin_them() {
        let mut r = register(4);
        assert!(r.is_valid_step(&op(0, OpKind::Write(5)), &RegisterRet::Unknown));
        assert_eq!(r.values(), &[ABSENT, 5]);
        let cas = op(1, OpKind::Cas { expect: 5, new: 6 });
        assert!(r.is_valid_step(&cas, &RegisterRet::Unknown));
        assert_eq!(r.values(), &[ABSENT, 5, 6]);
        assert!(r.is_valid_step(&op(2, OpKind::Read), &RegisterRet::ReadOk(6)));
        assert_eq!(r.values(), &[6]);
    }

    #[test]
    fn a_configuration_reached_twice_is_refused_the_second_time() {
        let r = register(2);
        let (w0, w1) = (op(0, OpKind::Write(1)), op(1, OpKind::Write(1)));
        let mut a = r.clone();
        assert!(a.is_valid_step(&w0, &RegisterRet::WriteOk));
        assert!(a.is_valid_step(&w1, &RegisterRet::WriteOk));
        let mut b = r.clone();
        assert!(b.is_valid_step(&w1, &RegisterRet::WriteOk));
        assert!(
            !b.is_valid_step(&w0, &RegisterRet::WriteOk),
            "{{w0, w1}} with value 1 again"
        );
        assert_eq!(r.search.revisits(), 1);
    }

    #[test]
    fn a_spent_budget_unwinds() {
        let mut r = CasRegister::new(1, SearchState::new(Instant::now()));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.is_valid_step(&op(0, OpKind::Read), &RegisterRet::ReadOk(ABSENT));
        }));
        assert!(caught.unwrap_err().is::<TimeLimitExceeded>());
    }
}
