use es_core::prelude::*;

mod front {
    use es_core::prelude::*;

    #[event(name = "FrontOpened")]
    pub struct Opened;
}

mod back {
    use es_core::prelude::*;

    #[event(name = "BackOpened")]
    pub struct Opened;
}

#[derive(Aggregate, Default)]
#[aggregate(events(front::Opened, back::Opened))]
pub struct House {
    open: bool,
}

impl Apply<front::Opened> for House {
    fn apply(&mut self, _: &front::Opened) {
        self.open = true;
    }
}

impl Apply<back::Opened> for House {
    fn apply(&mut self, _: &back::Opened) {
        self.open = true;
    }
}

fn main() {}
