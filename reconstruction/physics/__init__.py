"""Pure physics operators over ``xp`` arrays (NumPy or CuPy): patches, propagation, modulus, modes."""
