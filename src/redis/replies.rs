//! The replies of one round of a routed connection ([`super::conn::Conn::round`]): every reply in one
//! vector, and for each unit of the round where its replies are, or that it went unanswered.

use redis::Value;

/// The replies of one [`super::conn::Conn::round`]: for each unit, its replies in order, or nothing for a unit left
/// unanswered.
#[derive(Debug, Default)]
pub struct Replies {
    /// Every reply, unit after unit.
    pub(super) values: Vec<Value>,
    /// For each unit: where its replies start in `values` and how many there are.
    pub(super) spans: Vec<Option<(usize, usize)>>,
}

impl Replies {
    /// The replies of `n` units, none answered yet.
    pub fn unanswered(n: usize) -> Replies {
        Replies { values: Vec::new(), spans: vec![None; n] }
    }

    /// Whether no unit has been answered.
    pub fn none_answered(&self) -> bool {
        self.spans.iter().all(Option::is_none)
    }

    /// Forgets unit `i`'s replies: it is unanswered again.
    pub fn forget(&mut self, i: usize) {
        self.spans[i] = None;
    }

    /// Moves the replies of unit `from` of `round` in as unit `to`'s (nothing for an unanswered one).
    pub fn adopt(&mut self, to: usize, round: &mut Replies, from: usize) {
        let Some(unit) = round.unit(from) else { return };
        let at = self.values.len();
        self.values.extend(unit.iter_mut().map(std::mem::take));
        self.spans[to] = Some((at, self.values.len() - at));
    }

    /// The replies of unit `i` (its position in the round's `units`), `None` when its server never
    /// answered: the connection failed first (the commands may or may not have run).
    pub fn unit(&mut self, i: usize) -> Option<&mut [Value]> {
        let (start, len) = self.spans.get(i).copied().flatten()?;
        Some(&mut self.values[start..start + len])
    }

    /// Unit `i`'s replies taken out; `None` when it was unanswered.
    pub fn take_unit(&mut self, i: usize) -> Option<Vec<Value>> {
        Some(self.unit(i)?.iter_mut().map(std::mem::take).collect())
    }

    /// Unit `i`'s replies taken out as exactly `K` values; `None` when it was unanswered or had
    /// another number of replies.
    pub fn take<const K: usize>(&mut self, i: usize) -> Option<[Value; K]> {
        let unit = self.unit(i).filter(|u| u.len() == K)?;
        Some(std::array::from_fn(|j| std::mem::take(&mut unit[j])))
    }
}

impl Replies {
    /// Every reply, unit after unit (for a round where every unit was answered).
    pub fn into_values(mut self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.values.len());
        for i in 0..self.spans.len() {
            if let Some(unit) = self.unit(i) {
                out.extend(unit.iter_mut().map(std::mem::take));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_taken_unit_by_unit() {
        let mut r = Replies {
            values: vec![Value::Int(1), Value::Int(2), Value::Okay, Value::Int(3)],
            spans: vec![Some((3, 1)), None, Some((0, 2))],
        };
        assert_eq!(r.take::<2>(2), Some([Value::Int(1), Value::Int(2)]));
        assert!(r.take::<2>(0).is_none(), "unit 0 has one reply");
        assert!(r.unit(1).is_none());
        let r = Replies { values: vec![Value::Int(1), Value::Okay], spans: vec![Some((1, 1)), Some((0, 1))] };
        assert_eq!(r.into_values(), [Value::Okay, Value::Int(1)]);

        let mut all = Replies::unanswered(3);
        assert!(all.none_answered());
        let mut round =
            Replies { values: vec![Value::Int(7), Value::Okay], spans: vec![Some((1, 1)), Some((0, 1))] };
        all.adopt(2, &mut round, 0);
        all.adopt(0, &mut round, 1);
        assert!(!all.none_answered());
        assert_eq!(all.take::<1>(2), Some([Value::Okay]));
        assert_eq!(all.take::<1>(0), Some([Value::Int(7)]));
        all.forget(0);
        assert!(all.unit(0).is_none() && all.unit(1).is_none());
    }
}
