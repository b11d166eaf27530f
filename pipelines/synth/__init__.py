"""SynthScenes on the application side: synthetic SA-1B shards (`sa1b`), scenes with a labelled split
(`scenes`), the pretraining of the `synth` preset (`pretrain`) and the benchmark (`testbed`, `pilots`,
`scoring`, `report`, `bench`) that runs the real stages on the local stack."""
