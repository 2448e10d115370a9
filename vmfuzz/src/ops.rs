//! Operation-aware input generation and mutation: the in-guest executor
//! decodes every 8 bytes of a case as one operation whose first byte is
//! the operation's kind (guest/src/fuzz: the rest are its arguments).

use libafl::generators::Generator;
use libafl::inputs::{BytesInput, HasMutatorBytes};
use libafl::mutators::{MutationResult, Mutator};
use libafl::state::HasRand;
use libafl_bolts::rands::Rand;
use libafl_bolts::{Error, Named};
use std::borrow::Cow;
use std::num::NonZeroUsize;

/// Bytes of one operation.
pub const OP_BYTES: usize = 8;
/// The longest generated case, in operations.
pub const MAX_GENERATED_OPS: usize = 32;

/// Random cases of 1 to [`MAX_GENERATED_OPS`] whole operations (a length
/// that is a multiple of [`OP_BYTES`], at most 256 bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpsGenerator;

impl<S: HasRand> Generator<BytesInput, S> for OpsGenerator {
    fn generate(&mut self, state: &mut S) -> Result<BytesInput, Error> {
        let rand = state.rand_mut();
        let ops = rand.between(1, MAX_GENERATED_OPS);
        let bytes: Vec<u8> = (0..ops * OP_BYTES).map(|_| rand.next() as u8).collect();
        Ok(BytesInput::new(bytes))
    }
}

const THREE: NonZeroUsize = NonZeroUsize::new(3).unwrap();

/// Replaces the kind byte (the first byte) of one whole operation with a
/// random one, or with its neighbour: moves a case between operation
/// kinds without disturbing the arguments.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpKindMutator;

impl Named for OpKindMutator {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("OpKindMutator");
        &NAME
    }
}

impl<S: HasRand> Mutator<BytesInput, S> for OpKindMutator {
    fn mutate(&mut self, state: &mut S, input: &mut BytesInput) -> Result<MutationResult, Error> {
        let bytes = input.mutator_bytes_mut();
        let Some(ops) = NonZeroUsize::new(bytes.len() / OP_BYTES) else {
            return Ok(MutationResult::Skipped);
        };
        let rand = state.rand_mut();
        let at = rand.below(ops) * OP_BYTES;
        let old = bytes[at];
        bytes[at] = match rand.below(THREE) {
            0 => old.wrapping_add(1),
            1 => old.wrapping_sub(1),
            _ => rand.next() as u8,
        };
        Ok(if bytes[at] == old {
            MutationResult::Skipped
        } else {
            MutationResult::Mutated
        })
    }

    fn post_exec(
        &mut self,
        _state: &mut S,
        _new_corpus_id: Option<libafl::corpus::CorpusId>,
    ) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libafl::corpus::InMemoryCorpus;
    use libafl::feedbacks::ConstFeedback;
    use libafl::state::StdState;
    use libafl_bolts::rands::StdRand;

    type State =
        StdState<InMemoryCorpus<BytesInput>, BytesInput, StdRand, InMemoryCorpus<BytesInput>>;

    fn state() -> State {
        let mut f = ConstFeedback::new(false);
        let mut o = ConstFeedback::new(false);
        StdState::new(
            StdRand::with_seed(7),
            InMemoryCorpus::new(),
            InMemoryCorpus::new(),
            &mut f,
            &mut o,
        )
        .unwrap()
    }

    #[test]
    fn generated_cases_are_whole_operations() {
        let mut s = state();
        for _ in 0..200 {
            let i = OpsGenerator.generate(&mut s).unwrap();
            let n = i.mutator_bytes().len();
            assert!(n > 0 && n % OP_BYTES == 0 && n <= MAX_GENERATED_OPS * OP_BYTES);
        }
    }

    #[test]
    fn kind_mutator_changes_only_kind_bytes() {
        let mut s = state();
        let orig = vec![0x55u8; 40];
        let mut changed = 0;
        for _ in 0..200 {
            let mut i = BytesInput::new(orig.clone());
            if OpKindMutator.mutate(&mut s, &mut i).unwrap() == MutationResult::Mutated {
                changed += 1;
            }
            for (k, (a, b)) in i.mutator_bytes().iter().zip(&orig).enumerate() {
                assert!(a == b || k % OP_BYTES == 0, "byte {k} changed");
            }
        }
        assert!(changed > 150);
        let mut short = BytesInput::new(vec![1, 2, 3]);
        assert_eq!(
            OpKindMutator.mutate(&mut s, &mut short).unwrap(),
            MutationResult::Skipped
        );
    }
}
