//! A CTranslate2 `model.bin` (the Whisper weights): parsed with every size checked against
//! the file, or refused; every stored variable can then be read without a panic.
#![no_main]

use fieldvox_formats::ct2::Ct2Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Ct2Model::parse(data.to_vec()) else { return };
    let names: Vec<String> = model.names().map(str::to_owned).collect();
    for name in &names {
        let var = model.variable(name).expect("a listed variable exists");
        let _ = model.scalar_int(name);
        if let Ok(tensor) = model.tensor_f32(name) {
            assert_eq!(tensor.dims(), var.shape.as_slice());
        }
    }
});
