"""data: datasets as researchers have them: the folder layout and its validation (every problem with file and
line), decoding every image once into a cached uint8 tensor, the class taxonomy and label spaces, seeded
open-set splits, and procedural synthetic datasets. Imports: core."""
